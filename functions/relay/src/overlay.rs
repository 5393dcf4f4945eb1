//! A JSON object written out with some fields replaced, added or left out,
//! so a client's body is relayed without first being copied whole.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

pub(crate) struct Overlay<'a> {
    pub base: &'a Map<String, Value>,
    /// Written in place of the base's field of that name, or appended.
    pub set: Vec<(&'static str, Value)>,
    pub remove: &'static [&'static str],
}

impl Overlay<'_> {
    pub(crate) fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }
}

impl Serialize for Overlay<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.base {
            if self.remove.contains(&k.as_str()) {
                continue;
            }
            let v = self.set.iter().find(|(name, _)| name == k).map_or(v, |(_, v)| v);
            map.serialize_entry(k, v)?;
        }
        for (name, v) in self.set.iter().filter(|(name, _)| !self.base.contains_key(*name)) {
            map.serialize_entry(name, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_are_replaced_in_place_added_at_the_end_and_removed() {
        let Value::Object(base) = json!({"model": "a", "x": 1, "stream_options": {}, "y": [2]}) else { unreachable!() };
        let o =
            Overlay { base: &base, set: vec![("model", json!("b")), ("z", json!(true))], remove: &["stream_options"] };
        assert_eq!(String::from_utf8(o.to_bytes().to_vec()).unwrap(), r#"{"model":"b","x":1,"y":[2],"z":true}"#);
    }
}
