//! Checks of single values of a scenario file — ranges, sizes, protections, names and the
//! references between them — each failing with the line, the field and what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

use super::limits::MAX_NAME_BYTES;
use super::raw::RawSize;
use super::spec::Prot;
use super::ScenarioError;

/// Turns byte offsets into line numbers and builds errors.
pub(super) struct Ctx<'a> {
    pub(super) src: &'a str,
}

impl Ctx<'_> {
    /// The 1-based line a byte span starts on.
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        self.src[..span.start.min(self.src.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// An error at `span`'s line.
    pub(super) fn err<T>(
        &self,
        span: &Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(ScenarioError {
            line: self.line(span),
            field: field.into(),
            message: message.into(),
        })
    }

    /// A number in `lo..=hi`.
    pub(super) fn range(
        &self,
        v: &Spanned<u64>,
        field: &str,
        lo: u64,
        hi: u64,
    ) -> Result<u32, ScenarioError> {
        let x = *v.get_ref();
        if x < lo || x > hi {
            return self.err(
                &v.span(),
                field,
                format!("{x} is out of range: expected {lo} to {hi}"),
            );
        }
        Ok(x as u32)
    }

    /// An optional number in `lo..=hi`, `default` when absent.
    pub(super) fn opt_range(
        &self,
        v: &Option<Spanned<u64>>,
        field: &str,
        lo: u64,
        hi: u64,
        default: u32,
    ) -> Result<u32, ScenarioError> {
        v.as_ref()
            .map_or(Ok(default), |v| self.range(v, field, lo, hi))
    }

    /// A size in bytes (a number, or text with a unit); `page_aligned`: a non-zero
    /// multiple of 4 KiB.
    pub(super) fn size(
        &self,
        v: &Spanned<RawSize>,
        field: &str,
        page_aligned: bool,
    ) -> Result<u64, ScenarioError> {
        let bytes = match v.get_ref() {
            RawSize::Bytes(b) => Ok(*b),
            RawSize::Text(t) => parse_size(t),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(why) => return self.err(&v.span(), field, why),
        };
        if page_aligned && (bytes == 0 || bytes % 4096 != 0) {
            return self.err(
                &v.span(),
                field,
                format!("{bytes} bytes: expected a non-zero multiple of 4 KiB"),
            );
        }
        Ok(bytes)
    }

    /// A protection: `r`, `rw`, `rx` or `rwx`.
    pub(super) fn prot(&self, v: &Spanned<String>, field: &str) -> Result<Prot, ScenarioError> {
        let s = v.get_ref();
        let ok = !s.is_empty() && s.chars().all(|c| "rwx".contains(c)) && s.contains('r');
        let uniq: BTreeSet<char> = s.chars().collect();
        if !ok || uniq.len() != s.len() {
            return self.err(
                &v.span(),
                field,
                format!("'{}': expected r, rw, rx or rwx", shown(s)),
            );
        }
        Ok(Prot {
            read: true,
            write: s.contains('w'),
            exec: s.contains('x'),
        })
    }

    /// The index a reference names, or an error listing the names known.
    pub(super) fn lookup(
        &self,
        names: &BTreeMap<String, usize>,
        v: &Spanned<String>,
        field: &str,
        what: &str,
    ) -> Result<usize, ScenarioError> {
        names.get(v.get_ref()).copied().map_or_else(
            || {
                let known: Vec<&str> = names.keys().map(String::as_str).collect();
                self.err(
                    &v.span(),
                    field,
                    format!(
                        "unknown {what} '{}' (expected one of: {})",
                        shown(v.get_ref()),
                        known.join(", ")
                    ),
                )
            },
            Ok,
        )
    }

    /// Each name's index; every name valid ([`Ctx::name`]) and unique.
    pub(super) fn names<'n>(
        &self,
        items: impl Iterator<Item = &'n Spanned<String>>,
        field: &str,
    ) -> Result<BTreeMap<String, usize>, ScenarioError> {
        let mut map = BTreeMap::new();
        for (i, n) in items.enumerate() {
            self.name(n, field)?;
            if map.insert(n.get_ref().clone(), i).is_some() {
                return self.err(
                    &n.span(),
                    field,
                    format!("duplicate name '{}'", shown(n.get_ref())),
                );
            }
        }
        Ok(map)
    }

    /// A name: not empty, at most [`MAX_NAME_BYTES`], and printable — names end up in reports
    /// and traces, where a control character (an ANSI escape) could forge output.
    pub(super) fn name(&self, n: &Spanned<String>, field: &str) -> Result<(), ScenarioError> {
        let s = n.get_ref();
        if s.is_empty() {
            return self.err(&n.span(), field, "empty name");
        }
        if s.len() > MAX_NAME_BYTES {
            return self.err(
                &n.span(),
                field,
                format!("name of {} bytes: the limit is {MAX_NAME_BYTES}", s.len()),
            );
        }
        if let Some((at, c)) = s.char_indices().find(|(_, c)| c.is_control()) {
            return self.err(
                &n.span(),
                field,
                format!(
                    "name '{}' has control character U+{:04X} at byte {at}: expected printable characters",
                    shown(s),
                    c as u32
                ),
            );
        }
        Ok(())
    }
}

/// `s` as it may appear in a message: control characters escaped, at most 64 characters.
pub(super) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// A size as text: a number of bytes, or a number with K, KiB, M, MiB, G, GiB, T or TiB.
/// `Err`: why it is not a size.
fn parse_size(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let (mult, unit_name): (u64, &str) = match unit.trim() {
        "" | "B" => (1, "bytes"),
        "K" | "KiB" => (1 << 10, "KiB"),
        "M" | "MiB" => (1 << 20, "MiB"),
        "G" | "GiB" => (1 << 30, "GiB"),
        "T" | "TiB" => (1 << 40, "TiB"),
        _ => {
            return Err(format!(
            "'{}' is not a size: expected bytes or a number with K, KiB, M, MiB, G, GiB, T or TiB",
            shown(t)
        ))
        }
    };
    if num.is_empty() {
        return Err(format!("'{}' is not a size: no number", shown(t)));
    }
    let too_big = || {
        format!(
            "'{}' does not fit in 64 bits: the largest size is {} {unit_name}",
            shown(t),
            u64::MAX / mult
        )
    };
    let n: u64 = num.parse().map_err(|_| too_big())?;
    n.checked_mul(mult).ok_or_else(too_big)
}
