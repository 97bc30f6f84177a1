//! Customers and their KYC lifecycle: pure types and rules, no I/O.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use corebank_platform::Violations;
use uuid::Uuid;

pub mod country;

/// Where a customer stands in know-your-customer checks. Only VERIFIED
/// customers may open accounts or be debited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KycStatus {
    Pending,
    Verified,
    Rejected,
    Suspended,
}

impl KycStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verified => "verified",
            Self::Rejected => "rejected",
            Self::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "verified" => Some(Self::Verified),
            "rejected" => Some(Self::Rejected),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }

    /// The legal moves: PENDING → VERIFIED | REJECTED, VERIFIED ⇄ SUSPENDED.
    /// REJECTED is final.
    pub fn transition(self, to: KycStatus) -> Result<KycStatus, IllegalTransition> {
        use KycStatus::*;
        match (self, to) {
            (Pending, Verified)
            | (Pending, Rejected)
            | (Verified, Suspended)
            | (Suspended, Verified) => Ok(to),
            _ => Err(IllegalTransition { from: self, to }),
        }
    }
}

/// What an analyst or system decides about a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KycAction {
    Verify,
    Reject,
    Suspend,
    Reinstate,
}

impl KycAction {
    /// The status this action leads to from `from`, if the lifecycle allows it:
    /// each action starts from exactly one status.
    pub fn apply(self, from: KycStatus) -> Result<KycStatus, IllegalTransition> {
        let (required, to) = match self {
            Self::Verify => (KycStatus::Pending, KycStatus::Verified),
            Self::Reject => (KycStatus::Pending, KycStatus::Rejected),
            Self::Suspend => (KycStatus::Verified, KycStatus::Suspended),
            Self::Reinstate => (KycStatus::Suspended, KycStatus::Verified),
        };
        if from == required {
            from.transition(to)
        } else {
            Err(IllegalTransition { from, to })
        }
    }
}

/// A KYC move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} customer cannot become {}", .from.as_str(), .to.as_str())]
pub struct IllegalTransition {
    pub from: KycStatus,
    pub to: KycStatus,
}

/// A stored customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub customer_id: Uuid,
    pub legal_name: String,
    pub email: String,
    pub phone: String,
    pub date_of_birth: NaiveDate,
    pub country: String,
    pub national_id: String,
    pub kyc_status: KycStatus,
    /// Increases with every KYC transition.
    pub kyc_version: i64,
    /// The partner that created the customer; `None` for the bank's own.
    pub partner_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One step of the KYC history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KycEvent {
    pub kyc_event_id: Uuid,
    pub customer_id: Uuid,
    pub from_status: KycStatus,
    pub to_status: KycStatus,
    pub actor: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// A validated request to create a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    pub legal_name: String,
    pub email: String,
    pub phone: String,
    pub date_of_birth: NaiveDate,
    pub country: String,
    pub national_id: String,
}

/// The raw fields of a create request, before validation.
#[derive(Debug, Clone, Copy)]
pub struct NewCustomerInput<'a> {
    pub legal_name: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
    pub date_of_birth: &'a str,
    pub country: &'a str,
    pub national_id: &'a str,
}

/// The youngest a customer may be.
pub const MINIMUM_AGE_YEARS: i32 = 18;

impl NewCustomer {
    /// Validates every field, collecting all violations; `today` decides age.
    pub fn parse(input: NewCustomerInput<'_>, today: NaiveDate) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        let legal_name = violations.take("legal_name", parse_legal_name(input.legal_name));
        let email = violations.take("email", parse_email(input.email));
        let phone = violations.take("phone", parse_phone(input.phone));
        let date_of_birth = violations.take(
            "date_of_birth",
            parse_date_of_birth(input.date_of_birth, today),
        );
        let country = violations.take("country", parse_country(input.country));
        let national_id = violations.take("national_id", parse_national_id(input.national_id));
        match (
            legal_name,
            email,
            phone,
            date_of_birth,
            country,
            national_id,
        ) {
            (
                Some(legal_name),
                Some(email),
                Some(phone),
                Some(date_of_birth),
                Some(country),
                Some(national_id),
            ) if violations.is_empty() => Ok(Self {
                legal_name,
                email,
                phone,
                date_of_birth,
                country,
                national_id,
            }),
            _ => Err(violations),
        }
    }
}

pub fn parse_legal_name(text: &str) -> Result<String, &'static str> {
    let name = text.trim();
    if name.is_empty() {
        return Err("is required");
    }
    if name.chars().count() > 200 {
        return Err("must be at most 200 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}

/// A pragmatic address check (one `@`, a dotted domain, no spaces); the real
/// proof of an address is a confirmation mail, not a regex.
pub fn parse_email(text: &str) -> Result<String, &'static str> {
    let email = text.trim();
    if email.is_empty() {
        return Err("is required");
    }
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(email.to_ascii_lowercase())
    } else {
        Err("must be an email address such as ada@example.com")
    }
}

/// Optional; when given, E.164 (`+` then 8 to 15 digits).
pub fn parse_phone(text: &str) -> Result<String, &'static str> {
    let phone = text.trim();
    if phone.is_empty() {
        return Ok(String::new());
    }
    let digits = phone.strip_prefix('+').unwrap_or("");
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(phone.to_owned())
    } else {
        Err("must be in E.164 form such as +4915112345678")
    }
}

pub fn parse_date_of_birth(text: &str, today: NaiveDate) -> Result<NaiveDate, &'static str> {
    if text.trim().is_empty() {
        return Err("is required");
    }
    let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| "must be a date in YYYY-MM-DD form")?;
    if date > today {
        return Err("must not be in the future");
    }
    if date.year() < 1900 {
        return Err("must be after 1900-01-01");
    }
    if age_on(date, today) < MINIMUM_AGE_YEARS {
        return Err("customer must be at least 18 years old");
    }
    Ok(date)
}

fn age_on(born: NaiveDate, today: NaiveDate) -> i32 {
    let had_birthday = (today.month(), today.day()) >= (born.month(), born.day());
    today.year() - born.year() - if had_birthday { 0 } else { 1 }
}

pub fn parse_country(text: &str) -> Result<String, &'static str> {
    let country = text.trim();
    if country::is_assigned(country) {
        Ok(country.to_owned())
    } else {
        Err("must be an ISO 3166-1 alpha-2 code such as DE")
    }
}

pub fn parse_national_id(text: &str) -> Result<String, &'static str> {
    let id: String = text.trim().to_owned();
    if id.is_empty() {
        return Err("is required");
    }
    if (4..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(id.to_ascii_uppercase())
    } else {
        Err("must be 4 to 32 letters, digits or dashes")
    }
}

/// The most characters of a national id the mask ever shows.
pub const MASK_VISIBLE_MAX: usize = 4;

/// The national id as shown by default: at most its last four characters, and
/// never more than a third of it, the rest masked.
pub fn mask_national_id(id: &str) -> String {
    let length = id.chars().count();
    let visible = (length / 3).min(MASK_VISIBLE_MAX);
    id.chars()
        .enumerate()
        .map(|(index, c)| if index < length - visible { '*' } else { c })
        .collect()
}

/// Validates a KYC transition request's actor and reason.
pub fn parse_decision(actor: &str, reason: &str) -> Result<(String, String), Violations> {
    let mut violations = Violations::default();
    violations.check(!actor.trim().is_empty(), "actor", "is required");
    violations.check(
        actor.len() <= 100,
        "actor",
        "must be at most 100 characters",
    );
    violations.check(!reason.trim().is_empty(), "reason", "is required");
    violations.check(
        reason.len() <= 1000,
        "reason",
        "must be at most 1000 characters",
    );
    if violations.is_empty() {
        Ok((actor.trim().to_owned(), reason.trim().to_owned()))
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
    }

    fn input() -> NewCustomerInput<'static> {
        NewCustomerInput {
            legal_name: "Ada Lovelace",
            email: "Ada@Example.com",
            phone: "+441234567890",
            date_of_birth: "1990-12-10",
            country: "GB",
            national_id: "ab123456c",
        }
    }

    #[test]
    fn a_complete_customer_parses_and_is_normalized() {
        let customer = NewCustomer::parse(input(), today()).unwrap();
        assert_eq!(customer.email, "ada@example.com");
        assert_eq!(customer.national_id, "AB123456C");
    }

    #[test]
    fn every_invalid_field_is_named() {
        let bad = NewCustomerInput {
            legal_name: " ",
            email: "nope",
            phone: "12",
            date_of_birth: "10/12/1990",
            country: "gbr",
            national_id: "x",
        };
        let violations = NewCustomer::parse(bad, today()).unwrap_err().into_error();
        let fields: Vec<_> = violations
            .violations()
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "legal_name",
                "email",
                "phone",
                "date_of_birth",
                "country",
                "national_id"
            ]
        );
    }

    #[test]
    fn a_minor_or_future_birth_date_is_refused() {
        assert!(parse_date_of_birth("2010-01-01", today()).is_err());
        assert!(parse_date_of_birth("2030-01-01", today()).is_err());
        assert!(parse_date_of_birth("2008-11-24", today()).is_ok());
        assert!(parse_date_of_birth("2008-11-25", today()).is_err());
    }

    #[test]
    fn kyc_follows_its_lifecycle() {
        use KycStatus::*;
        assert_eq!(Pending.transition(Verified), Ok(Verified));
        assert_eq!(Pending.transition(Rejected), Ok(Rejected));
        assert_eq!(Verified.transition(Suspended), Ok(Suspended));
        assert_eq!(Suspended.transition(Verified), Ok(Verified));
        for (from, to) in [
            (Rejected, Verified),
            (Pending, Suspended),
            (Verified, Rejected),
            (Verified, Verified),
            (Suspended, Rejected),
        ] {
            assert!(from.transition(to).is_err(), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn reinstating_only_applies_to_a_suspended_customer() {
        assert_eq!(
            KycAction::Reinstate.apply(KycStatus::Suspended),
            Ok(KycStatus::Verified)
        );
        assert!(KycAction::Reinstate.apply(KycStatus::Pending).is_err());
        assert!(KycAction::Verify.apply(KycStatus::Suspended).is_err());
    }

    #[test]
    fn the_mask_shows_at_most_the_last_four_characters() {
        assert_eq!(mask_national_id("AB1234567890"), "********7890");
        assert_eq!(mask_national_id("AB1234567890123456"), "**************3456");
    }

    #[test]
    fn the_mask_never_shows_more_than_a_third_of_the_id() {
        assert_eq!(mask_national_id("1234"), "***4");
        assert_eq!(mask_national_id("12345"), "****5");
        assert_eq!(mask_national_id("AB123456C"), "******56C");
        assert_eq!(mask_national_id("12"), "**");
        assert_eq!(mask_national_id(""), "");
    }

    #[test]
    fn the_mask_keeps_the_length_and_never_reveals_a_third() {
        for length in 0..=40 {
            let id: String = "A1B2C3D4E5".chars().cycle().take(length).collect();
            let masked = mask_national_id(&id);
            assert_eq!(masked.chars().count(), length);
            let shown = masked.chars().filter(|c| *c != '*').count();
            assert!(shown <= 4 && shown * 3 <= length, "{id} -> {masked}");
        }
    }

    #[test]
    fn only_assigned_country_codes_are_accepted() {
        assert_eq!(parse_country(" DE "), Ok("DE".to_owned()));
        for code in ["XX", "ZZ", "gb", "GBR", ""] {
            assert!(parse_country(code).is_err(), "{code}");
        }
    }
}
