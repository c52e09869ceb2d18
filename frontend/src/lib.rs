//! The wasm entry point: hydrates the server-rendered chat page. Built for the browser
//! only; on any other target this crate is empty.

/// Called by the hydration script once the wasm is loaded.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
