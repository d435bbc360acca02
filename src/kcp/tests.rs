//! Unit tests of the engine, grouped by behaviour.
