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

/// What the node tells the page before it runs, in `<meta>` tags of the shell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSettings {
    /// Where the page fetches its connection token, if it signs in.
    pub token_url: Option<String>,
}

/// The name of the `<meta>` tag holding [`PageSettings::token_url`].
pub const TOKEN_URL_META: &str = "chatroom-token-url";

/// The whole HTML document, rendered by the server and hydrated in the browser.
pub fn shell(options: LeptosOptions, settings: PageSettings) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                {settings.token_url.map(|url| view! { <meta name=TOKEN_URL_META content=url /> })}
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
