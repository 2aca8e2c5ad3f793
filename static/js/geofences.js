// The Geofences page.
