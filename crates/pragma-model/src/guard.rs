//! Panics in other people's parsers, turned into errors.
//!
//! Some dependencies panic on malformed input instead of returning an error (the
//! `tokenizers` crate's decoder deserializer calls `expect` on a bad `decoder` entry of
//! `tokenizer.json`; found by the `hf_tokenizer` fuzz target). [`catch`] runs such a call
//! and returns its panic as an `Err` with the panic's message, without printing the
//! panic: while a guarded call runs on a thread, the panic hook is quiet for that
//! thread, and every other panic goes to the hook that was installed before (the
//! default one, or libFuzzer's, which aborts).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous: Hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Run `f`; a panic inside it becomes `Err(message)`. Use only around calls into code
/// that is not ours and parses untrusted input: our own code returns errors.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install();
    let was = GUARDED.with(|g| g.replace(true));
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}
