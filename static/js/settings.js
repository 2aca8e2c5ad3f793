// The Settings page.
