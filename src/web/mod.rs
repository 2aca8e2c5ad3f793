//! What a browser is served: the HTML [`pages`] (sign-in, the fleet and shipment maps, the
//! customer's share view) and the [`driver`]'s side (the phone page's API and its device links).
pub mod driver;
pub mod pages;
