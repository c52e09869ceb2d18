//! How a line's words are shown, as plain functions: the links in a text (http and https
//! only; everything else stays text), an author's colour (one of [`AUTHOR_COLOURS`]
//! classes, stable for a name), and a server time as the `datetime` of a `<time>`.

/// How many author colour classes the style sheet has (`author-c0` … `author-c11`).
pub const AUTHOR_COLOURS: u32 = 12;

/// A piece of a line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Shown as it is.
    Text(String),
    /// An http or https address, shown as a link.
    Link(String),
}

/// Splits `text` into plain text and http(s) links. A link runs to the next whitespace;
/// punctuation that usually ends a sentence is left out of it.
pub fn segments(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find_link_start(rest) {
        let (before, from) = rest.split_at(start);
        let end = from.find(char::is_whitespace).unwrap_or(from.len());
        let candidate = &from[..end];
        let link = candidate.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '\'', '"']);
        let scheme_len = if link.starts_with("https://") { 8 } else { 7 };
        if link.len() <= scheme_len {
            // A bare scheme is no address: keep it as text and look further on.
            push_text(&mut out, &rest[..start + scheme_len]);
            rest = &rest[start + scheme_len..];
            continue;
        }
        push_text(&mut out, before);
        out.push(Segment::Link(link.to_owned()));
        rest = &from[link.len()..];
    }
    push_text(&mut out, rest);
    out
}

/// Where the next `http://` or `https://` starts, as a word's beginning.
fn find_link_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("http").map(|at| at + from) {
        let rest = &lower[found..];
        let at_word_start = found == 0 || lower[..found].ends_with(|c: char| c.is_whitespace() || "([<\"'".contains(c));
        if at_word_start && (rest.starts_with("http://") || rest.starts_with("https://")) {
            return Some(found);
        }
        from = found + 4;
    }
    None
}

fn push_text(out: &mut Vec<Segment>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Segment::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Segment::Text(text.to_owned()));
    }
}

/// Whether `text` names `name` as a word of its own ("@ann", "ann:", "hi Ann"), any case.
pub fn mentions(text: &str, name: &str) -> bool {
    let (text, name) = (text.to_lowercase(), name.trim().to_lowercase());
    if name.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(&name).any(|(at, found)| {
        let before = text[..at].chars().next_back();
        let after = text[at + found.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The colour class of an author: the same name always gets the same one (FNV-1a).
pub fn author_class(name: &str) -> String {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    format!("author-c{}", hash % AUTHOR_COLOURS)
}

/// A server time (ms since the Unix epoch) as an ISO 8601 UTC date and time, for the
/// `datetime` attribute of a `<time>`.
pub fn iso_time(ts_ms: u64) -> String {
    let secs = ts_ms / 1000;
    let (year, month, day) = civil_date(secs / 86_400);
    let day_secs = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", day_secs / 3600, (day_secs / 60) % 60, day_secs % 60)
}

/// The UTC calendar date (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's algorithm).
pub fn civil_date(days: u64) -> (i64, u32, u32) {
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small and positive by construction.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(s: &str) -> Segment {
        Segment::Link(s.into())
    }

    fn text(s: &str) -> Segment {
        Segment::Text(s.into())
    }

    #[test]
    fn only_http_and_https_addresses_become_links() {
        assert_eq!(
            segments("see https://example.com/a?b=1."),
            [text("see "), link("https://example.com/a?b=1"), text(".")]
        );
        assert_eq!(
            segments("http://x.test and (http://y.test)"),
            [link("http://x.test"), text(" and ("), link("http://y.test"), text(")")]
        );
        for plain in
            ["javascript:alert(1)", "data:text/html,<b>x</b>", "ftp://x.test", "xhttp://x.test", "https://", "no links"]
        {
            assert_eq!(segments(plain), [text(plain)], "{plain:?}");
        }
        // An address glued to other text is not taken for one.
        assert_eq!(segments("<b>https://x.test</b>"), [text("<b>https://x.test</b>")]);
        assert!(segments("").is_empty());
    }

    #[test]
    fn a_name_is_mentioned_as_a_word_of_its_own() {
        for text in ["@ann hi", "hi Ann", "ANN: look", "(ann)", "ann"] {
            assert!(mentions(text, "ann"), "{text:?}");
        }
        for text in ["annie", "joann", "b_ann", "nothing", ""] {
            assert!(!mentions(text, "ann"), "{text:?}");
        }
        assert!(mentions("hey Zoë!", "zoë"));
        assert!(!mentions("anything", " "));
    }

    #[test]
    fn an_author_keeps_its_colour() {
        assert_eq!(author_class("alice"), author_class("alice"));
        let classes: std::collections::HashSet<String> =
            ["alice", "bob", "carol", "dave", "eve", "mallory", "trent", "zoë"]
                .iter()
                .map(|n| author_class(n))
                .collect();
        assert!(classes.len() > 3, "names spread over the colours: {classes:?}");
        assert!(
            classes
                .iter()
                .all(|c| c.strip_prefix("author-c").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n < 12))
        );
    }

    #[test]
    fn times_are_iso_utc() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(1_764_155_011_473), "2025-11-26T11:03:31Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
