//! The chatroom's Leptos app: the wire contract shared with the server and the load
//! tool ([`protocol`]), the page's state ([`store`]) and view ([`page`]) with how a
//! line's words are shown ([`text`]), and the browser's Socket.IO client (`client`,
//! browser only). Dependencies run one way:
//! page → store / client → protocol.

pub mod clock;
pub mod page;
pub mod protocol;
pub mod store;
pub mod text;

#[cfg(feature = "hydrate")]
pub mod client;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, provide_meta_context};

/// The whole HTML document, rendered by the server and hydrated in the browser.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The application root: styles, title and the chat page.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/chatroom.css" />
        <page::ChatPage />
    }
}
