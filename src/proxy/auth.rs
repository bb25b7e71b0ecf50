//! Step 4: turning the one presented key value into a known key, or the precise
//! reason it is not one. Later steps get the typed [`KeyRecord`] and never read
//! headers again.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::keys::store::{KeyRecord, KeySet};
use crate::keys::{KG_PREFIX, KeyHash, check_kg};
use crate::proxy::hygiene::Presented;
use crate::proxy::reject::{Malformed, Reject};

pub(crate) fn authenticate(
    presented: Presented<'_>,
    keys: &KeySet,
    now: OffsetDateTime,
) -> Result<Arc<KeyRecord>, Reject> {
    let value = match presented {
        Presented::None => return Err(Reject::MissingKey),
        Presented::One { value, .. } => value,
    };
    if value.is_empty() {
        return Err(Reject::MalformedKey(Malformed::Empty));
    }
    if value.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(Reject::MalformedKey(Malformed::WhiteSpace));
    }
    if !value.iter().all(u8::is_ascii_graphic) {
        return Err(Reject::MalformedKey(Malformed::NotText));
    }
    if value.starts_with(KG_PREFIX.as_bytes()) {
        // Only ASCII graphic bytes remain, so this is valid UTF-8.
        let text =
            std::str::from_utf8(value).map_err(|_| Reject::MalformedKey(Malformed::NotText))?;
        check_kg(text).map_err(|e| Reject::MalformedKey(Malformed::Kg(e)))?;
    }
    let key = keys.lookup(&KeyHash::of(value)).ok_or(Reject::InvalidKey)?;
    if key.is_expired(now) {
        return Err(Reject::ExpiredKey {
            name: key.name.clone(),
        });
    }
    Ok(key.clone())
}
