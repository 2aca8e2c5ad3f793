// The People page.
