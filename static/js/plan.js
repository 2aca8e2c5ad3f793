// The Plan a shipment page.
