//! Checks of single values of a scenario file — ranges, sizes, protections, names and the
//! references between them — each failing with the line, the field and what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

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
            RawSize::Bytes(b) => Some(*b),
            RawSize::Text(t) => parse_size(t),
        };
        let Some(bytes) = bytes else {
            return self.err(
                &v.span(),
                field,
                "not a size: expected bytes or a number with K, KiB, M, MiB, G or GiB",
            );
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
                format!("'{s}': expected r, rw, rx or rwx"),
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
                        v.get_ref(),
                        known.join(", ")
                    ),
                )
            },
            Ok,
        )
    }

    /// Each name's index, names non-empty and unique.
    pub(super) fn names<'n>(
        &self,
        items: impl Iterator<Item = &'n Spanned<String>>,
        field: &str,
    ) -> Result<BTreeMap<String, usize>, ScenarioError> {
        let mut map = BTreeMap::new();
        for (i, n) in items.enumerate() {
            if n.get_ref().is_empty() {
                return self.err(&n.span(), field, "empty name");
            }
            if map.insert(n.get_ref().clone(), i).is_some() {
                return self.err(
                    &n.span(),
                    field,
                    format!("duplicate name '{}'", n.get_ref()),
                );
            }
        }
        Ok(map)
    }
}

/// A size as text: a number of bytes, or a number with K, KiB, M, MiB, G or GiB.
fn parse_size(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}
