//! Fault injection, for testing clients: `ebsnap serve --faults
//! throttle=0.2,error=0.05,reset=0.02,latency-ms=20 --seed N` throttles, fails, drops
//! and delays requests at those rates, reproducibly for a given seed.

use super::error::{EbsError, Ec2Error};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    /// Share of requests answered RequestThrottledException (HTTP 400).
    pub throttle: f64,
    /// Share answered InternalServerException (HTTP 500).
    pub error: f64,
    /// Share whose connection breaks mid-answer.
    pub reset: f64,
    /// Added to every request.
    pub latency: Duration,
}

impl std::str::FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut spec = FaultSpec::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not NAME=VALUE"))?;
            let rate = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("{key} must be a rate from 0 to 1, not {value:?}"))
            };
            match key {
                "throttle" => spec.throttle = rate()?,
                "error" => spec.error = rate()?,
                "reset" => spec.reset = rate()?,
                "latency-ms" => {
                    spec.latency =
                        Duration::from_millis(value.parse().map_err(|_| {
                            format!("latency-ms must be milliseconds, not {value:?}")
                        })?)
                }
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (throttle, error, reset, latency-ms)"
                    ))
                }
            }
        }
        if spec.throttle + spec.error + spec.reset > 1.0 {
            return Err("the fault rates add up to more than 1".into());
        }
        Ok(spec)
    }
}

/// The faults and a seeded random sequence (splitmix64: the same seed, the same
/// sequence of decisions).
#[derive(Debug)]
pub struct Faults {
    spec: FaultSpec,
    state: Mutex<u64>,
}

impl Faults {
    pub fn new(spec: FaultSpec, seed: u64) -> Arc<Faults> {
        Arc::new(Faults {
            spec,
            state: Mutex::new(seed),
        })
    }

    fn next_unit(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub async fn inject(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    if !faults.spec.latency.is_zero() {
        tokio::time::sleep(faults.spec.latency).await;
    }
    let roll = faults.next_unit();
    let spec = &faults.spec;
    // Each API fails in its own shape: EBS JSON, or EC2 XML for the Query calls.
    let ec2 = request.uri().path() == "/";
    if roll < spec.throttle {
        if ec2 {
            return Ec2Error {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "RequestLimitExceeded".into(),
                message: "injected: request limit exceeded".into(),
            }
            .into_response();
        }
        return EbsError {
            status: StatusCode::BAD_REQUEST,
            error_type: "RequestThrottledException",
            reason: Some("ACCOUNT_THROTTLED"),
            message: "injected: rate exceeded".into(),
        }
        .into_response();
    }
    if roll < spec.throttle + spec.error {
        if ec2 {
            return Ec2Error {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "InternalError".into(),
                message: "injected: internal error".into(),
            }
            .into_response();
        }
        return EbsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "injected: internal error",
        )
        .into_response();
    }
    if roll < spec.throttle + spec.error + spec.reset {
        // The answer's head goes out, then the connection breaks: the client sees a
        // response cut short, as after a reset.
        let broken = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("injected connection reset"))
        });
        return (StatusCode::INTERNAL_SERVER_ERROR, Body::from_stream(broken)).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_nonsense() {
        let spec: FaultSpec = "throttle=0.2,error=0.05,reset=0.02,latency-ms=20"
            .parse()
            .unwrap();
        assert_eq!(
            spec,
            FaultSpec {
                throttle: 0.2,
                error: 0.05,
                reset: 0.02,
                latency: Duration::from_millis(20)
            }
        );
        assert!("throttle=2".parse::<FaultSpec>().is_err());
        assert!("bogus=0.1".parse::<FaultSpec>().is_err());
        assert!("throttle=0.6,error=0.6".parse::<FaultSpec>().is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_decisions() {
        let a = Faults::new(FaultSpec::default(), 7);
        let b = Faults::new(FaultSpec::default(), 7);
        let rolls: Vec<f64> = (0..5).map(|_| a.next_unit()).collect();
        assert_eq!(rolls, (0..5).map(|_| b.next_unit()).collect::<Vec<_>>());
        assert!(rolls.iter().all(|r| (0.0..1.0).contains(r)));
    }
}
