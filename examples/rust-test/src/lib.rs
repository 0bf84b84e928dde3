//! Nothing here: the example is its tests (tests/stack.rs), which use berth as a library.
