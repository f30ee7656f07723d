//! The terminal: the read loops and signals (`repl`), and the line editor's completion
//! and hints (`editor`).

pub(super) mod editor;
pub mod repl;
