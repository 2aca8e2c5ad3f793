// The Alerts page.
