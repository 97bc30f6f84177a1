//! Money: ISO 4217 currencies with their minor-unit exponents, and strict
//! parsing and formatting of decimal amount strings. Never a float.

use std::str::FromStr;

use rust_decimal::Decimal;

/// A currency corebank can hold, with its ISO 4217 minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

/// ISO 4217 codes and exponents of the currencies corebank accepts.
#[rustfmt::skip]
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2), ("ARS", 2), ("AUD", 2), ("BGN", 2), ("BHD", 3), ("BRL", 2),
    ("CAD", 2), ("CHF", 2), ("CLP", 0), ("CNY", 2), ("COP", 2), ("CZK", 2),
    ("DKK", 2), ("EGP", 2), ("EUR", 2), ("GBP", 2), ("HKD", 2), ("HUF", 2),
    ("IDR", 2), ("ILS", 2), ("INR", 2), ("IQD", 3), ("ISK", 0), ("JOD", 3),
    ("JPY", 0), ("KES", 2), ("KRW", 0), ("KWD", 3), ("LYD", 3), ("MAD", 2),
    ("MXN", 2), ("MYR", 2), ("NGN", 2), ("NOK", 2), ("NZD", 2), ("OMR", 3),
    ("PHP", 2), ("PKR", 2), ("PLN", 2), ("QAR", 2), ("RON", 2), ("SAR", 2),
    ("SEK", 2), ("SGD", 2), ("THB", 2), ("TND", 3), ("TRY", 2), ("TWD", 2),
    ("UAH", 2), ("UGX", 0), ("USD", 2), ("VND", 0), ("XAF", 0), ("XOF", 0),
    ("ZAR", 2),
];

impl Currency {
    /// The currency for an ISO 4217 alphabetic code (upper case).
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(code, exponent)| Self {
                code,
                exponent: *exponent,
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point in the minor unit (USD 2, JPY 0, KWD 3).
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// `amount` as a decimal string with exactly the currency's exponent.
    pub fn format(&self, amount: Decimal) -> String {
        let mut scaled = amount;
        scaled.rescale(self.exponent);
        scaled.to_string()
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code)
    }
}

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}: expected an ISO 4217 code such as USD")]
    UnknownCurrency(String),
    #[error("must be a decimal string such as \"125.50\"")]
    NotADecimal,
    #[error("must be greater than zero")]
    NotPositive,
    #[error("{currency} allows at most {exponent} decimal places")]
    TooPrecise {
        currency: &'static str,
        exponent: u32,
    },
    #[error("must not exceed {max}")]
    TooLarge { max: Decimal },
}

/// Limits every amount entering the system must respect.
#[derive(Debug, Clone, Copy)]
pub struct AmountLimits {
    /// The largest single amount accepted, in major units.
    pub max: Decimal,
}

impl Default for AmountLimits {
    fn default() -> Self {
        Self {
            max: Decimal::from(1_000_000_000_i64),
        }
    }
}

/// Parses a strictly positive amount of `currency` no larger than `limits.max`.
pub fn parse_amount(
    currency: Currency,
    text: &str,
    limits: AmountLimits,
) -> Result<Decimal, MoneyError> {
    let amount = parse_decimal(currency, text)?;
    if amount <= Decimal::ZERO {
        return Err(MoneyError::NotPositive);
    }
    if amount > limits.max {
        return Err(MoneyError::TooLarge { max: limits.max });
    }
    Ok(amount)
}

/// Parses a zero-or-positive amount (limits such as an overdraft).
pub fn parse_non_negative(
    currency: Currency,
    text: &str,
    limits: AmountLimits,
) -> Result<Decimal, MoneyError> {
    let amount = parse_decimal(currency, text)?;
    if amount > limits.max {
        return Err(MoneyError::TooLarge { max: limits.max });
    }
    Ok(amount)
}

/// Digits with at most one decimal point: no sign, exponent, spaces or
/// thousands separators, so "1e3" and " 5" are refused rather than guessed at.
fn parse_decimal(currency: Currency, text: &str) -> Result<Decimal, MoneyError> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits_only = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(whole) || fraction.is_some_and(|f| !digits_only(f)) || text.len() > 40 {
        return Err(MoneyError::NotADecimal);
    }
    let amount = Decimal::from_str(text).map_err(|_| MoneyError::NotADecimal)?;
    if amount.normalize().scale() > currency.exponent {
        return Err(MoneyError::TooPrecise {
            currency: currency.code,
            exponent: currency.exponent,
        });
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::parse("USD").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
    }

    #[test]
    fn an_unknown_or_lower_case_currency_is_refused() {
        assert!(matches!(
            Currency::parse("XYZ"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(Currency::parse("usd").is_err());
    }

    #[test]
    fn a_plain_decimal_amount_parses() {
        let amount = parse_amount(usd(), "125.50", AmountLimits::default()).unwrap();
        assert_eq!(amount, Decimal::new(12550, 2));
    }

    #[test]
    fn trailing_zeros_beyond_the_exponent_are_harmless() {
        assert_eq!(
            parse_amount(usd(), "10.500", AmountLimits::default()).unwrap(),
            Decimal::new(1050, 2)
        );
    }

    #[test]
    fn more_decimals_than_the_currency_allows_are_refused() {
        assert!(matches!(
            parse_amount(usd(), "1.005", AmountLimits::default()),
            Err(MoneyError::TooPrecise { exponent: 2, .. })
        ));
        let jpy = Currency::parse("JPY").unwrap();
        assert!(parse_amount(jpy, "1.5", AmountLimits::default()).is_err());
        let kwd = Currency::parse("KWD").unwrap();
        assert!(parse_amount(kwd, "1.005", AmountLimits::default()).is_ok());
    }

    #[test]
    fn zero_and_negative_amounts_are_refused() {
        assert_eq!(
            parse_amount(usd(), "0", AmountLimits::default()),
            Err(MoneyError::NotPositive)
        );
        assert_eq!(
            parse_amount(usd(), "0.00", AmountLimits::default()),
            Err(MoneyError::NotPositive)
        );
        assert_eq!(
            parse_amount(usd(), "-5", AmountLimits::default()),
            Err(MoneyError::NotADecimal)
        );
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for text in [
            "", "abc", "1e3", " 5", "5 ", "1,000.00", "1.", ".5", "1.2.3", "+5", "NaN",
        ] {
            assert_eq!(
                parse_amount(usd(), text, AmountLimits::default()),
                Err(MoneyError::NotADecimal),
                "{text:?}"
            );
        }
    }

    #[test]
    fn amounts_above_the_configured_maximum_are_refused() {
        let limits = AmountLimits {
            max: Decimal::from(1000),
        };
        assert!(parse_amount(usd(), "1000.00", limits).is_ok());
        assert!(matches!(
            parse_amount(usd(), "1000.01", limits),
            Err(MoneyError::TooLarge { .. })
        ));
    }

    #[test]
    fn formatting_uses_the_currency_exponent() {
        assert_eq!(usd().format(Decimal::new(5, 0)), "5.00");
        assert_eq!(
            usd().format(Decimal::new(-12550, 3)),
            "-12.550".trim_end_matches('0')
        );
        assert_eq!(
            Currency::parse("JPY").unwrap().format(Decimal::new(700, 0)),
            "700"
        );
        assert_eq!(
            Currency::parse("KWD").unwrap().format(Decimal::new(15, 1)),
            "1.500"
        );
    }

    proptest::proptest! {
        #[test]
        fn formatting_then_parsing_returns_the_same_amount(cents in 1_i64..100_000_000_000) {
            let amount = Decimal::new(cents, 2);
            let text = usd().format(amount);
            proptest::prop_assert_eq!(parse_amount(usd(), &text, AmountLimits { max: Decimal::MAX }).unwrap(), amount);
        }
    }
}
