//! What a Kafka client sends in SaslAuthenticate under SCRAM, checked as the broker checks
//! it: the input split at its first NUL into client-first and client-final, run through the
//! server's exchange against a fixed credential. Any bytes give a challenge, a refusal or
//! (never, in practice) an authentication, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_security::scram::{Credential, Mechanism, ServerExchange};

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    for mechanism in Mechanism::ALL {
        let _ = ServerExchange::client_first(first);
        let credential =
            Credential::from_salted_password(mechanism, b"salted", b"salt".to_vec(), 4096);
        let mut exchange = ServerExchange::new(mechanism);
        if exchange
            .challenge(first, Some(credential), "servernonce", b"secret")
            .is_ok()
        {
            let _ = exchange.finish(last);
        }
    }
});
