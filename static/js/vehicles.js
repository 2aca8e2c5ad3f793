// The Vehicles page.
