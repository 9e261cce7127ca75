//! Durations as users write them: `90s`, `45m`, `1h30m`, `7d`.

/// Parses a duration into seconds. Units: `s`, `m`, `h`, `d`, `w`, combined largest first.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit; write e.g. `{text}s`, `{text}m` or `{text}h`"
        ));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_unit = u64::MAX;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "`{c}` is not a unit; use s, m, h, d or w (e.g. `1h30m`)"
                ))
            }
        };
        if number.is_empty() {
            return Err(format!("a number is missing before `{c}`"));
        }
        if unit >= last_unit {
            return Err("write the units largest first, each once (e.g. `1h30m`)".into());
        }
        last_unit = unit;
        let n: u64 = number
            .parse()
            .map_err(|_| "the number is too large".to_owned())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| "the duration is too long".to_owned())?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("`{number}` at the end has no unit"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("30m1h").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
    }
}
