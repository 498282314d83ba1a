//! Temporal's dynamic config: reading the visibility read and write modes. (Editing
//! them, the flip itself, is not built yet.)

pub mod dynamic_config;
pub mod edit;
