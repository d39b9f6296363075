//! Kafka's user-credential APIs: DescribeUserScramCredentials and
//! AlterUserScramCredentials, over the region's credentials (`broker::credentials`), the
//! same users `meridian user` manages.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;
use meridian_security::scram::{Credential, ITERATIONS_MAX, ITERATIONS_MIN, Mechanism};

use crate::broker::Broker;
use crate::broker::credentials::SetError;

use super::code;
use super::sasl::UNSUPPORTED_SASL_MECHANISM;

const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

pub(super) async fn describe(
    broker: &Arc<Broker>,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let mut out = DescribeUserScramCredentialsResponse::default();
    let credentials = match broker.credentials().await {
        Ok(c) => c,
        Err(e) => {
            out.error_code = code::REQUEST_TIMED_OUT;
            out.error_message = Some(StrBytes::from_string(e));
            return out;
        }
    };
    let info = |u: &crate::broker::credentials::UserInfo| {
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = StrBytes::from_string(u.user.clone());
        r.credential_infos = u
            .mechanisms
            .iter()
            .map(|(m, iterations)| {
                let mut c = CredentialInfo::default();
                c.mechanism = m.kafka_type();
                c.iterations = *iterations as i32;
                c
            })
            .collect();
        r
    };
    match request.users {
        // Null or empty: every user.
        None => out.results = credentials.list(&[]).iter().map(info).collect(),
        Some(names) if names.is_empty() => {
            out.results = credentials.list(&[]).iter().map(info).collect()
        }
        Some(names) => {
            let mut seen = HashSet::new();
            for n in names {
                let name = n.name.to_string();
                let mut r = match credentials.list(std::slice::from_ref(&name)).first() {
                    Some(u) => info(u),
                    None => {
                        let mut r = DescribeUserScramCredentialsResult::default();
                        r.error_code = RESOURCE_NOT_FOUND;
                        r.error_message = Some(StrBytes::from_string(format!(
                            "attempt to describe a user credential that does not exist: {name}"
                        )));
                        r
                    }
                };
                if !seen.insert(name.clone()) {
                    r = DescribeUserScramCredentialsResult::default();
                    r.error_code = DUPLICATE_RESOURCE;
                    r.error_message = Some(StrBytes::from_static_str("user named twice"));
                }
                r.user = StrBytes::from_string(name);
                out.results.push(r);
            }
        }
    }
    out
}

pub(super) async fn alter(
    broker: &Arc<Broker>,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut out = AlterUserScramCredentialsResponse::default();
    // A user named more than once with the same mechanism in one request is refused
    // whole for that user (as Kafka).
    let mut named: std::collections::HashMap<(String, i8), usize> = Default::default();
    for (user, m) in request
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism))
        .chain(
            request
                .upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism)),
        )
    {
        *named.entry((user, m)).or_default() += 1;
    }
    let duplicated: HashSet<String> = named
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((u, _), _)| u)
        .collect();
    let mut results: Vec<(String, i16, Option<String>)> = Vec::new();
    let mut note = |user: String, code: i16, message: Option<String>| {
        if code != code::NONE || !results.iter().any(|(u, ..)| *u == user) {
            results.retain(|(u, c, _)| *u != user || *c != code::NONE);
            if !results.iter().any(|(u, ..)| *u == user) {
                results.push((user, code, message));
            }
        }
    };
    for user in &duplicated {
        note(
            user.clone(),
            DUPLICATE_RESOURCE,
            Some("a user and mechanism named twice in one request".into()),
        );
    }
    for d in &request.deletions {
        let user = d.name.to_string();
        if duplicated.contains(&user) {
            continue;
        }
        let Some(m) = Mechanism::from_kafka_type(d.mechanism) else {
            note(
                user,
                UNSUPPORTED_SASL_MECHANISM,
                Some(format!("unknown SCRAM mechanism {}", d.mechanism)),
            );
            continue;
        };
        match broker.set_credential(&user, m, None).await {
            Ok(()) => note(user, code::NONE, None),
            Err(e) => note(user, set_error_code(&e), Some(e.to_string())),
        }
    }
    for u in &request.upsertions {
        let user = u.name.to_string();
        if duplicated.contains(&user) {
            continue;
        }
        let Some(m) = Mechanism::from_kafka_type(u.mechanism) else {
            note(
                user,
                UNSUPPORTED_SASL_MECHANISM,
                Some(format!("unknown SCRAM mechanism {}", u.mechanism)),
            );
            continue;
        };
        let iterations = u.iterations;
        if !(ITERATIONS_MIN as i32..=ITERATIONS_MAX as i32).contains(&iterations) {
            note(
                user,
                UNACCEPTABLE_CREDENTIAL,
                Some(format!(
                    "{iterations} iterations is outside {ITERATIONS_MIN}..={ITERATIONS_MAX}"
                )),
            );
            continue;
        }
        if u.salt.is_empty() || u.salted_password.is_empty() {
            note(
                user,
                UNACCEPTABLE_CREDENTIAL,
                Some("an empty salt or salted password".into()),
            );
            continue;
        }
        let credential = Credential::from_salted_password(
            m,
            &u.salted_password,
            u.salt.to_vec(),
            iterations as u32,
        );
        match broker.set_credential(&user, m, Some(credential)).await {
            Ok(()) => note(user, code::NONE, None),
            Err(e) => note(user, set_error_code(&e), Some(e.to_string())),
        }
    }
    out.results = results
        .into_iter()
        .map(|(user, code, message)| {
            let mut r = AlterUserScramCredentialsResult::default();
            r.user = StrBytes::from_string(user);
            r.error_code = code;
            r.error_message = message.map(StrBytes::from_string);
            r
        })
        .collect();
    out
}

/// Kafka's code for a credential not set.
fn set_error_code(e: &SetError) -> i16 {
    match e {
        SetError::Invalid(_) | SetError::Full(_) => UNACCEPTABLE_CREDENTIAL,
        SetError::NotFound(..) => RESOURCE_NOT_FOUND,
        SetError::Unavailable(_) => code::REQUEST_TIMED_OUT,
    }
}
