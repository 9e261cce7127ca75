//! Kubernetes resource quantities (`500m`, `1.5`, `2Gi`, `1e3`), as the API server parses them.

/// The value of a quantity, scaled by 1000 (millis), or a description of what is wrong.
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err("a resource quantity cannot be negative".into());
    }
    let number_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(format!("`{text}` does not start with a number"));
    }
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..]
                .parse()
                .map_err(|_| format!("`{s}` is not a valid exponent"))?;
            10f64.powi(exp)
        }
        s => {
            return Err(format!(
                "`{s}` is not a unit; use m, k, M, G, T, Ki, Mi, Gi, Ti (e.g. `500m`, `2Gi`)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    Ok(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("2"), Ok(2.0));
        assert_eq!(parse_quantity("1Gi"), Ok(1024f64.powi(3)));
        assert_eq!(parse_quantity("1e3"), Ok(1000.0));
        assert_eq!(parse_quantity("1.5"), Ok(1.5));
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("1GB").unwrap_err().contains("`GB`"));
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("1.2.3").is_err());
    }
}
