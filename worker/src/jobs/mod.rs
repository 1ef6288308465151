//! Job handlers, one module per job type.

pub mod stripe_charge;
