//! Wipe.
