//! Arguments of the probes in `examples/`: a value that does not parse or is out of range ends
//! the probe with its usage line (exit status 2), instead of being replaced by the default or
//! running a measurement of nothing and printing a figure that means nothing.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// A probe's name and usage line, for its error messages.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The example's name (`e2e_probe`).
    pub name: &'static str,
    /// Its arguments, as the usage line shows them (`[GROUPS] [IN_FLIGHT] [p|f]`).
    pub usage: &'static str,
}

impl Probe {
    /// Ends the probe with `msg` and the usage line.
    pub fn refuse(&self, msg: impl Display) -> ! {
        eprintln!("{}: {msg}", self.name);
        eprintln!("usage: {} {}", self.name, self.usage);
        std::process::exit(2)
    }

    /// `text` (argument or variable `what`) as a number in `range`.
    pub fn number<T>(&self, what: &str, text: &str, range: RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + Display,
    {
        match text.parse::<T>() {
            Ok(v) if range.contains(&v) => v,
            _ => self.refuse(format_args!(
                "{what} is a number from {} to {}, not {text:?}",
                range.start(),
                range.end()
            )),
        }
    }

    /// The `i`-th command-line argument (1-based) as a number in `range`; `default` when there
    /// is none.
    pub fn arg<T>(&self, i: usize, what: &str, default: T, range: RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + Display,
    {
        match std::env::args().nth(i) {
            Some(text) => self.number(what, &text, range),
            None => default,
        }
    }

    /// The environment variable `var` as a number in `range`; `default` when it is not set.
    pub fn env<T>(&self, var: &str, default: T, range: RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + Display,
    {
        match std::env::var(var) {
            Ok(text) => self.number(var, &text, range),
            Err(_) => default,
        }
    }

    /// The `i`-th argument as one of `words`, or `None` when there is none.
    pub fn word(&self, i: usize, what: &str, words: &[&'static str]) -> Option<&'static str> {
        let text = std::env::args().nth(i)?;
        match words.iter().find(|w| **w == text) {
            Some(w) => Some(w),
            None => self.refuse(format_args!(
                "{what} is one of {}, not {text:?}",
                words.join(", ")
            )),
        }
    }

    /// A probe whose one argument is an optional `load`: with it, every other CPU is kept busy
    /// ([`crate::load::Load`]) until the returned value is dropped.
    pub fn load_if_asked(&self) -> Option<crate::load::Load> {
        let load = self.word(1, "the argument", &["load"]).is_some();
        self.at_most(1);
        load.then(|| crate::load::Load::start().unwrap_or_else(|e| self.refuse(e)))
    }

    /// Refuses arguments past the `n`-th.
    pub fn at_most(&self, n: usize) {
        if let Some(extra) = std::env::args().nth(n + 1) {
            self.refuse(format_args!("unexpected argument {extra:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Probe;

    const P: Probe = Probe {
        name: "test_probe",
        usage: "[N]",
    };

    #[test]
    fn a_number_in_range_parses() {
        assert_eq!(P.number::<u64>("N", "64", 1..=256), 64);
        assert_eq!(P.number::<usize>("N", "1", 1..=1), 1);
    }
}
