//! When two names are the same name: uniqueness compares folded forms, so that look-alike
//! spellings of one name cannot be held by two users at once.

use app::protocol::Username;
use unicode_normalization::UnicodeNormalization;

/// The form of a name that uniqueness compares: compatibility-normalized (NFKC), case
/// folded, without invisible characters, so "Ann", "ANN", "ａｎｎ" and "an\u{200B}n" are one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FoldedName(String);

impl FoldedName {
    /// The folded form of `name`.
    pub fn of(name: &Username) -> Self {
        let lower: String = name.as_str().nfkc().flat_map(char::to_lowercase).collect();
        Self(lower.nfkc().filter(|c| !is_invisible(*c)).collect())
    }

    /// The folded form as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that print as nothing, which would make two names look the same.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(raw: &str) -> FoldedName {
        FoldedName::of(&Username::parse(raw).unwrap())
    }

    #[test]
    fn case_width_composition_and_invisible_characters_do_not_count() {
        for same in ["zoe\u{308}", " ZOË ", "Ｚｏë", "Zo\u{200B}ë"] {
            assert_eq!(fold(same), fold("Zoë"), "{same:?}");
        }
        assert_ne!(fold("Zoe"), fold("Zoë"));
        assert_eq!(fold("ANN").as_str(), "ann");
    }
}
