//! Every key the config accepts, read off the serde definitions of the raw
//! config structs rather than kept by hand.
//!
//! [`keys`] runs a type's `Deserialize` against a tracing deserializer:
//! each struct tells it its field names (the `fields` serde passes to
//! `deserialize_struct`, i.e. the names as they appear in TOML, renames
//! included), and the tracer descends into each field's value to find the
//! nested tables, arrays of tables and `toml::Spanned` wrappers. Leaf
//! values are answered with a neutral value; when a leaf type refuses it
//! (a socket address refuses `""`), that key is skipped in the next pass,
//! so every table is reached. docs/configuration.md is checked against
//! this list (tests/docs.rs).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// One key: the TOML table it is written in (`[dnstap]`, `[[list]]`,
/// `[[bgp.neighbor]]`) and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub section: String,
    pub name: String,
    /// The value is itself a table or an array of tables (a section).
    pub table: bool,
}

/// The keys of `T`, sorted by section and name.
pub fn keys<T: for<'de> de::Deserialize<'de>>() -> Vec<Key> {
    let state = RefCell::new(State::default());
    // Each pass skips the keys whose values failed in earlier ones; a pass
    // that adds no failure has seen everything reachable.
    for _ in 0..10_000 {
        let before = state.borrow().failed.len();
        let _ = T::deserialize(Tracer { state: &state, path: Vec::new() });
        if state.borrow().failed.len() == before {
            break;
        }
    }
    let state = state.into_inner();
    state
        .keys
        .iter()
        .map(|(path, name)| Key {
            section: section(path),
            name: name.clone(),
            table: state.tables.contains(&(path.clone(), name.clone())),
        })
        .collect()
}

/// A path segment: a key, and whether its value is an array.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Seg {
    name: String,
    array: bool,
}

type Path = Vec<Seg>;

#[derive(Default)]
struct State {
    keys: BTreeSet<(Path, String)>,
    tables: HashSet<(Path, String)>,
    failed: HashSet<(Path, String)>,
}

fn section(path: &Path) -> String {
    if path.is_empty() {
        return String::new();
    }
    let name = path.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(".");
    if path.last().is_some_and(|s| s.array) { format!("[[{name}]]") } else { format!("[{name}]") }
}

/// The tracer's error; `recorded` once the failing key is noted.
#[derive(Debug)]
pub struct TraceError {
    message: String,
    recorded: bool,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        TraceError { message: msg.to_string(), recorded: false }
    }
}

/// serde_spanned's private struct name (what `toml::Spanned` asks for).
const SPANNED: &str = "$__serde_spanned_private_Spanned";

struct Tracer<'a> {
    state: &'a RefCell<State>,
    path: Path,
}

impl<'a> Tracer<'a> {
    fn at(&self, path: Path) -> Tracer<'a> {
        Tracer { state: self.state, path }
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            visitor.$visit($($value)?)
        })*
    };
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    leaf! {
        deserialize_any => visit_str(""),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('a'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_identifier => visit_str(""),
        deserialize_unit => visit_unit(),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        // One element, at the same path marked as an array.
        let mut path = self.path.clone();
        if let Some(last) = path.last_mut() {
            last.array = true;
        }
        visitor.visit_seq(Elements { tracer: Some(self.at(path)), left: 1 })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let path = self.path.clone();
        visitor.visit_seq(TupleElements { tracer: self, path, left: len })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_map(Fields { tracer: self, fields: &[], next: 0 })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if name == SPANNED {
            return visitor.visit_map(SpannedFields { tracer: Some(self), next: 0, fields });
        }
        {
            let mut st = self.state.borrow_mut();
            if let Some((last, parent)) = self.path.split_last() {
                st.tables.insert((parent.to_vec(), last.name.clone()));
            }
            for f in fields {
                st.keys.insert((self.path.clone(), (*f).to_string()));
            }
        }
        visitor.visit_map(Fields { tracer: self, fields, next: 0 })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_enum(Variant { tracer: self, name: variants.first().copied().unwrap_or_default() })
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

/// The fields of a struct, minus those that failed before.
struct Fields<'a> {
    tracer: Tracer<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        while let Some(f) = self.fields.get(self.next) {
            let failed = self.tracer.state.borrow().failed.contains(&(self.tracer.path.clone(), (*f).to_string()));
            if !failed {
                return seed.deserialize(BorrowedStrDeserializer::new(f)).map(Some);
            }
            self.next += 1;
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        let field = self.fields.get(self.next).copied().unwrap_or_default();
        self.next += 1;
        let mut path = self.tracer.path.clone();
        path.push(Seg { name: field.to_string(), array: false });
        seed.deserialize(self.tracer.at(path)).map_err(|mut e| {
            if !e.recorded {
                self.tracer.state.borrow_mut().failed.insert((self.tracer.path.clone(), field.to_string()));
                e.recorded = true;
            }
            e
        })
    }
}

/// `toml::Spanned`: start and end offsets, then the value at the same path.
struct SpannedFields<'a> {
    tracer: Option<Tracer<'a>>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for SpannedFields<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        match self.fields.get(self.next) {
            Some(f) => seed.deserialize(BorrowedStrDeserializer::new(f)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        self.next += 1;
        if self.next == self.fields.len() {
            match self.tracer.take() {
                Some(t) => seed.deserialize(t),
                None => Err(de::Error::custom("spanned value taken twice")),
            }
        } else {
            seed.deserialize(0u64.into_deserializer())
        }
    }
}

struct Elements<'a> {
    tracer: Option<Tracer<'a>>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        match self.tracer.take() {
            Some(t) => seed.deserialize(t).map(Some),
            None => Ok(None),
        }
    }
}

struct TupleElements<'a> {
    tracer: Tracer<'a>,
    path: Path,
    left: usize,
}

impl<'de> SeqAccess<'de> for TupleElements<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.tracer.at(self.path.clone())).map(Some)
    }
}

/// The first variant of an enum (variants carry no config keys here, but a
/// struct variant would be traced like a struct).
struct Variant<'a> {
    tracer: Tracer<'a>,
    name: &'static str,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = TraceError;
    type Variant = Tracer<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Tracer<'a>), TraceError> {
        let v = seed.deserialize(BorrowedStrDeserializer::<TraceError>::new(self.name))?;
        Ok((v, self.tracer))
    }
}

impl<'de> de::VariantAccess<'de> for Tracer<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, TraceError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::net::SocketAddr;
    use toml::Spanned;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Top {
        first: Inner,
        #[serde(rename = "item")]
        items: Vec<Spanned<Item>>,
        opt: Option<Spanned<Inner>>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        // Refuses the tracer's "" and must not hide the keys after it.
        listen: SocketAddr,
        required: u32,
        nested: Option<Leaf>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Leaf {
        deep: Spanned<String>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Item {
        name: String,
        sub: Vec<Leaf>,
    }

    #[test]
    fn every_key_of_nested_renamed_spanned_and_array_tables() {
        let got: Vec<(String, String, bool)> =
            keys::<Top>().into_iter().map(|k| (k.section, k.name, k.table)).collect();
        let want: Vec<(String, String, bool)> = [
            ("", "first", true),
            ("", "item", true),
            ("", "opt", true),
            ("[[item]]", "name", false),
            ("[[item]]", "sub", true),
            ("[[item.sub]]", "deep", false),
            ("[first]", "listen", false),
            ("[first]", "nested", true),
            ("[first]", "required", false),
            ("[first.nested]", "deep", false),
            ("[opt]", "listen", false),
            ("[opt]", "nested", true),
            ("[opt]", "required", false),
            ("[opt.nested]", "deep", false),
        ]
        .into_iter()
        .map(|(s, n, t)| (s.to_string(), n.to_string(), t))
        .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got_sorted, want_sorted);
    }
}
