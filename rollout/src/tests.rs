use proptest::prelude::*;

use super::*;

fn plan(steps: &[Step]) -> Plan {
    Plan {
        steps: steps.to_vec(),
        interval_ms: 1_000,
        check_every_ms: 1_000,
        min_requests: 10,
        gates: Gates {
            match_rate: None,
            error_rate_max_increase: Some(0.005),
            p99_max_ratio: None,
            webhook: None,
        },
        failure_limit: 2,
    }
}

fn w(pct: u16) -> Step {
    Step::Weight(pct * 100)
}

/// `requests` served by each side, `errors` of them 5xx on the new one.
fn evidence(requests: u64, errors: u64) -> Evidence {
    Evidence {
        legacy: SideFigures {
            requests,
            ..Default::default()
        },
        service: SideFigures {
            requests,
            errors,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn a_healthy_rollout_steps_to_completion() {
    let p = plan(&[w(1), w(25), w(100)]);
    let mut s = State::start(&p, 0);
    assert_eq!((s.weight_bp, s.phase), (100, Phase::Progressing));
    // Not due before the interval.
    let (d, _, same) = decide(&p, &s, &evidence(50, 0), &evidence(50, 0), 999);
    assert!(matches!(d, Decision::Hold { .. }));
    assert_eq!(same, s);
    for (t, want) in [(1_000, 2_500), (2_000, 10_000)] {
        let (d, gates, next) = decide(&p, &s, &evidence(50, 0), &evidence(50, 0), t);
        assert_eq!(gates[0].passed, Some(true));
        assert!(matches!(d, Decision::Step { weight_bp, .. } if weight_bp == want));
        s = next;
    }
    assert_eq!(s.phase, Phase::Completed);
    assert!(matches!(
        decide(&p, &s, &evidence(50, 0), &evidence(50, 0), 9_000).0,
        Decision::Hold { .. }
    ));
}

#[test]
fn failing_checks_roll_back_at_the_limit_and_a_pass_resets_the_count() {
    let p = plan(&[w(10), w(50), w(100)]);
    let s = State::start(&p, 0);
    let (d, _, s) = decide(&p, &s, &evidence(100, 5), &evidence(100, 5), 1_000);
    assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    assert_eq!((s.failures, s.weight_bp), (1, 1_000));
    // A passing check in between resets the count (and, with enough requests, steps).
    let (_, _, s2) = decide(&p, &s, &evidence(100, 0), &evidence(100, 0), 2_000);
    assert_eq!((s2.failures, s2.weight_bp), (0, 5_000));
    let (d, gates, s) = decide(&p, &s, &evidence(100, 5), &evidence(100, 5), 2_000);
    assert!(matches!(d, Decision::Rollback { .. }), "{d:?}");
    assert_eq!(gates[0].passed, Some(false));
    assert_eq!((s.weight_bp, s.phase), (0, Phase::RolledBack));
    // It stays there until resumed, from the first step.
    assert!(matches!(
        decide(&p, &s, &evidence(100, 0), &evidence(100, 0), 10_000).0,
        Decision::Hold { .. }
    ));
    let s = command(&p, &s, Command::Resume, 11_000).unwrap();
    assert_eq!(
        (s.weight_bp, s.phase, s.step),
        (1_000, Phase::Progressing, 0)
    );
}

#[test]
fn too_few_requests_or_no_data_hold_without_failing() {
    let p = plan(&[w(10), w(100)]);
    let s = State::start(&p, 0);
    let (d, _, s) = decide(&p, &s, &evidence(5, 0), &evidence(5, 0), 1_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.contains("5 of 10")),
        "{d:?}"
    );
    // Nothing since the last check: no data is no failure, and no step.
    let (d, gates, s) = decide(&p, &s, &evidence(0, 0), &evidence(0, 0), 2_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.contains("0 of 10")),
        "{d:?}"
    );
    assert_eq!((gates[0].passed, s.failures), (None, 0));
}

#[test]
fn a_shadow_only_step_needs_its_interval_and_shadow_comparisons() {
    let mut p = plan(&[w(0), w(10), w(100)]);
    p.gates.p99_max_ratio = Some(1.2);
    let s = State::start(&p, 0);
    assert_eq!(s.weight_bp, 0);
    // No evidence, no step: nothing compared at this 0 % step.
    let (d, _, s) = decide(&p, &s, &Evidence::default(), &Evidence::default(), 1_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.contains("0 of 10 shadow comparisons")),
        "{d:?}"
    );
    // Compared enough (no request served by the new service: none can be at 0 %).
    let mut e = Evidence::default();
    (e.shadow_compared, e.shadow_matched) = (10, 10);
    let (d, gates, s) = decide(&p, &s, &e, &e, 2_000);
    assert!(
        matches!(
            d,
            Decision::Step {
                weight_bp: 1_000,
                ..
            }
        ),
        "{d:?}"
    );
    assert!(gates.iter().all(|g| g.passed == Some(true)), "{gates:?}");
    // With a match-rate gate the shadow decides.
    p.gates.match_rate = Some(0.99);
    let s0 = State::start(&p, 0);
    let mut e = Evidence::default();
    (e.shadow_compared, e.shadow_matched) = (100, 50);
    let (d, _, _) = decide(&p, &s0, &e, &e, 1_000);
    assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    assert_eq!(s.weight_bp, 1_000);
}

#[test]
fn a_step_is_never_left_on_no_evidence_even_without_min_requests() {
    let mut p = plan(&[w(10), w(100)]);
    p.min_requests = 0;
    p.gates = Gates::default();
    let s = State::start(&p, 0);
    let (d, _, s) = decide(&p, &s, &Evidence::default(), &Evidence::default(), 5_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.contains("0 of 1 requests")),
        "{d:?}"
    );
    let (d, _, _) = decide(&p, &s, &evidence(1, 0), &evidence(1, 0), 10_000);
    assert!(matches!(d, Decision::Step { .. }), "{d:?}");
}

#[test]
fn gates_are_checked_every_check_every_and_a_long_interval_does_not_slow_a_rollback() {
    let mut p = plan(&[w(10), w(50), w(100)]);
    p.interval_ms = 600_000;
    p.check_every_ms = 5_000;
    let s = State::start(&p, 0);
    // Healthy checks hold (the step lasts its interval) and say how long is left.
    let (d, _, s) = decide(&p, &s, &evidence(100, 0), &evidence(100, 0), 5_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.contains("595 s more")),
        "{d:?}"
    );
    // The service turns bad: back to 0 % two checks later, ten minutes before the interval.
    let (d, _, s) = decide(&p, &s, &evidence(100, 100), &evidence(200, 100), 10_000);
    assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    let (d, _, s) = decide(&p, &s, &evidence(100, 100), &evidence(300, 200), 15_000);
    assert!(matches!(d, Decision::Rollback { .. }), "{d:?}");
    assert_eq!((s.weight_bp, s.phase), (0, Phase::RolledBack));
}

#[test]
fn a_step_is_left_only_when_the_gates_held_over_the_whole_step() {
    let p = plan(&[w(10), w(50), w(100)]);
    let s = State::start(&p, 0);
    // The last second was clean, the step as a whole was not.
    let (d, _, s) = decide(&p, &s, &evidence(100, 0), &evidence(200, 100), 1_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.contains("over this step")),
        "{d:?}"
    );
    assert_eq!((s.weight_bp, s.failures), (1_000, 0));
}

#[test]
fn a_completed_context_stays_guarded_against_the_monolith_it_replaced() {
    let mut p = plan(&[w(50), w(100)]);
    p.gates.p99_max_ratio = Some(2.0);
    let s = State::start(&p, 0);
    // At 50 % the monolith's figures are known: 1 % errors, p99 ~10 ms.
    let mut e = evidence(100, 1);
    e.legacy.errors = 1;
    for _ in 0..100 {
        e.legacy.latency.record(10_000);
        e.service.latency.record(12_000);
    }
    let (d, _, s) = decide(&p, &s, &e, &e, 1_000);
    assert!(
        matches!(
            d,
            Decision::Step {
                weight_bp: 10_000,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(s.baseline.error_rate, Some(0.01));
    // At 100 %: no monolith traffic. Healthy: held, and the status says the gates held.
    let mut healthy = Evidence::default();
    healthy.service.requests = 100;
    healthy.service.errors = 1;
    for _ in 0..100 {
        healthy.service.latency.record(12_000);
    }
    let (d, gates, s) = decide(&p, &s, &healthy, &Evidence::default(), 2_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.contains("guarded: every gate held")),
        "{d:?}"
    );
    assert!(gates.iter().all(|g| g.passed == Some(true)), "{gates:?}");
    // Slow against the monolith's last p99: two failing checks roll it back.
    let mut slow = healthy.clone();
    for _ in 0..200 {
        slow.service.latency.record(80_000);
    }
    let (d, _, s) = decide(&p, &s, &slow, &Evidence::default(), 3_000);
    assert!(
        matches!(&d, Decision::Hold { reason } if reason.starts_with("guard: p99_latency failed")),
        "{d:?}"
    );
    let (d, _, s) = decide(&p, &s, &slow, &Evidence::default(), 4_000);
    assert!(
        matches!(&d, Decision::Rollback { reason } if reason.starts_with("guard:")),
        "{d:?}"
    );
    assert_eq!((s.weight_bp, s.phase), (0, Phase::RolledBack));
}

#[test]
fn a_pause_step_holds_until_promoted() {
    let p = plan(&[w(10), Step::Pause, w(50), w(100)]);
    let s = State::start(&p, 0);
    let (_, _, s) = decide(&p, &s, &evidence(50, 0), &evidence(50, 0), 1_000);
    assert_eq!((s.phase, s.weight_bp, s.step), (Phase::Paused, 1_000, 1));
    assert!(matches!(
        decide(&p, &s, &evidence(50, 0), &evidence(50, 0), 5_000).0,
        Decision::Hold { .. }
    ));
    let s = command(&p, &s, Command::Promote, 6_000).unwrap();
    assert_eq!(
        (s.phase, s.weight_bp, s.step),
        (Phase::Progressing, 5_000, 2)
    );
}

#[test]
fn commands() {
    let p = plan(&[w(10), w(50), w(100)]);
    let s = State::start(&p, 0);
    let paused = command(&p, &s, Command::Pause, 1).unwrap();
    assert_eq!(paused.phase, Phase::Paused);
    assert!(command(&p, &paused, Command::Pause, 2).is_err());
    let set = command(&p, &s, Command::SetWeight(3_000), 3).unwrap();
    assert_eq!(
        (set.phase, set.weight_bp, set.step),
        (Phase::Paused, 3_000, 0)
    );
    // Resuming from a weight set between steps goes on from the step below it; the next
    // passing check moves to the step above.
    let resumed = command(&p, &set, Command::Resume, 4).unwrap();
    assert_eq!(
        (resumed.phase, resumed.weight_bp, resumed.step),
        (Phase::Progressing, 3_000, 0)
    );
    let (_, _, stepped) = decide(&p, &resumed, &evidence(50, 0), &evidence(50, 0), 2_000);
    assert_eq!(stepped.weight_bp, 5_000);
    let promoted = command(&p, &set, Command::Promote, 5).unwrap();
    assert_eq!(promoted.weight_bp, 5_000);
    // A pause holding 10 % is behind a weight of 30 % set by hand: promoting skips it.
    let paused = plan(&[w(10), Step::Pause, w(50), w(100)]);
    let set = command(
        &paused,
        &State::start(&paused, 0),
        Command::SetWeight(3_000),
        1,
    )
    .unwrap();
    let promoted = command(&paused, &set, Command::Promote, 2).unwrap();
    assert_eq!((promoted.weight_bp, promoted.step), (5_000, 2));
    let back = command(&p, &s, Command::Rollback, 6).unwrap();
    assert_eq!((back.phase, back.weight_bp), (Phase::RolledBack, 0));
    assert!(command(&p, &back, Command::Promote, 7).is_err());
    assert!(command(&p, &s, Command::SetWeight(10_001), 8).is_err());
    assert!(back.generation > s.generation);
}

#[test]
fn an_edited_plan_never_raises_the_weight() {
    let old = plan(&[w(10), w(30), w(100)]);
    let mut s = State::start(&old, 0);
    s = command(&old, &s, Command::Promote, 1).unwrap();
    assert_eq!(s.weight_bp, 3_000);
    // 30 is still a step: kept.
    let kept = rebase(&plan(&[w(5), w(30), w(60), w(100)]), &s);
    assert_eq!((kept.weight_bp, kept.step), (3_000, 1));
    // 30 is gone: the nearest lower step.
    let lower = rebase(&plan(&[w(5), w(20), w(60), w(100)]), &s);
    assert_eq!(
        (lower.weight_bp, lower.step, lower.phase),
        (2_000, 1, Phase::Progressing)
    );
    assert!(lower.generation > s.generation);
    // Every step is above it: the weight stays, and the plan's first step comes next.
    let above = plan(&[w(60), w(100)]);
    let kept = rebase(&above, &s);
    assert_eq!((kept.weight_bp, kept.step), (3_000, 0));
    let (_, _, next) = decide(&above, &kept, &evidence(50, 0), &evidence(50, 0), 10_000);
    assert_eq!(next.weight_bp, 6_000);
}

#[test]
fn latency_quantiles_are_within_a_bucket() {
    let mut h = LatencyHistogram::default();
    for us in 1..=1_000u64 {
        h.record(us * 10); // 10 µs … 10 ms
    }
    let p99 = h.quantile_ms(0.99).unwrap();
    assert!((9.9..=9.9 * 1.08 + 1e-9).contains(&p99), "{p99}");
    let mut other = LatencyHistogram::default();
    other.record(5_000_000);
    h.merge(&other);
    assert_eq!(h.total(), 1_001);
    assert!(LatencyHistogram::default().quantile_ms(0.5).is_none());
}

fn any_plan() -> impl Strategy<Value = Plan> {
    (
        prop::collection::btree_set(1u16..=10_000, 1..6),
        prop::collection::vec(any::<bool>(), 6),
        1u32..4,
        0u64..50,
    )
        .prop_map(|(weights, pauses, failure_limit, min_requests)| {
            let mut steps = Vec::new();
            for (i, bp) in weights.into_iter().enumerate() {
                steps.push(Step::Weight(bp));
                if pauses[i] {
                    steps.push(Step::Pause);
                }
            }
            Plan {
                steps,
                interval_ms: 1_000,
                check_every_ms: 1_000,
                min_requests,
                gates: Gates {
                    match_rate: Some(0.99),
                    error_rate_max_increase: Some(0.01),
                    p99_max_ratio: None,
                    webhook: None,
                },
                failure_limit,
            }
        })
}

/// One check's evidence: requests served, errors, comparisons and matches; healthy figures
/// half of the time (else steps would be rare).
fn any_evidence() -> impl Strategy<Value = Evidence> {
    let healthy = (1u64..100).prop_map(|requests| {
        let mut e = evidence(requests, 0);
        e.shadow_compared = requests;
        e.shadow_matched = requests;
        e
    });
    let any = (0u64..100, 0u64..100, 0u64..100, 0u64..=100).prop_map(
        |(requests, errors, compared, matched)| {
            let mut e = evidence(requests, errors.min(requests));
            e.shadow_compared = compared;
            e.shadow_matched = matched.min(compared);
            e
        },
    );
    prop_oneof![healthy, any]
}

proptest! {
    #[test]
    fn decisions_keep_the_plans_promises(
        p in any_plan(),
        checks in prop::collection::vec((any_evidence(), 0i64..3_000), 1..40),
    ) {
        let mut s = State::start(&p, 0);
        let mut now = 0;
        let mut failing_in_a_row = 0;
        for (e, dt) in checks {
            now += dt;
            let due = now - s.checked_ms >= 1_000
                && matches!(s.phase, Phase::Progressing | Phase::Completed);
            let (d, gates, next) = decide(&p, &s, &e, &e, now);
            let failed = gates.iter().any(|g| g.passed == Some(false));
            // Never above the plan, and a weight is a step's or 0.
            prop_assert!(next.weight_bp <= p.max_weight_bp());
            prop_assert!(next.weight_bp == 0 || p.steps.contains(&Step::Weight(next.weight_bp)));
            match d {
                Decision::Step { weight_bp, .. } => {
                    // Only up, only when due, never with a failing gate or too few requests.
                    prop_assert!(due && !failed);
                    prop_assert!(e.service.requests >= p.min_requests.max(1));
                    prop_assert!(now - s.since_ms >= 1_000, "left before its interval");
                    prop_assert!(weight_bp > s.weight_bp || p.steps[next.step] == Step::Pause);
                }
                Decision::Rollback { .. } => {
                    prop_assert!(due && failed);
                    prop_assert_eq!(next.weight_bp, 0);
                }
                Decision::Hold { .. } => prop_assert!(next.weight_bp == s.weight_bp),
            }
            if due {
                failing_in_a_row = if failed { failing_in_a_row + 1 } else { 0 };
            }
            // `failure_limit` failing checks in a row always end at 0 %.
            if failing_in_a_row >= p.failure_limit {
                prop_assert_eq!(next.weight_bp, 0);
                prop_assert_eq!(next.phase, Phase::RolledBack);
                failing_in_a_row = 0;
            }
            s = next;
        }
    }

    #[test]
    fn a_plan_edit_never_raises_the_weight(old in any_plan(), new in any_plan(), promotions in 0usize..8) {
        let mut s = State::start(&old, 0);
        for i in 0..promotions {
            if let Ok(n) = command(&old, &s, Command::Promote, i as i64) {
                s = n;
            }
        }
        let r = rebase(&new, &s);
        prop_assert!(r.weight_bp <= s.weight_bp);
        prop_assert!(r.weight_bp == s.weight_bp || new.steps.contains(&Step::Weight(r.weight_bp)));
    }
}

#[test]
fn the_last_check_keeps_each_gate_against_its_threshold_and_the_steps_evidence() {
    let mut p = plan(&[w(10), w(50), w(100)]);
    p.interval_ms = 10_000;
    let s = State::start(&p, 0);
    assert_eq!(s.last_check, None);
    // Mid-step: the gate as measured since the last check, 4 of 10 requests at this step.
    let (_, _, s) = decide(&p, &s, &evidence(4, 0), &evidence(4, 0), 1_000);
    let c = s.last_check.clone().expect("a check was made");
    assert_eq!(c.at_ms, 1_000);
    assert_eq!(
        (
            c.gates[0].gate.as_str(),
            c.gates[0].value,
            c.gates[0].threshold
        ),
        ("error_rate", Some(0.0), Some(0.005))
    );
    assert_eq!(
        c.evidence,
        Some(StepEvidence {
            seen: 4,
            needed: 10,
            counted: "requests served by the new service".into()
        })
    );
    // Stored as JSON and read back whole; a state stored before checks were kept still reads.
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s);
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("last_check");
    assert_eq!(
        serde_json::from_value::<State>(old).unwrap().last_check,
        None
    );
    // A step: the new step has no evidence yet; the gates that let it go are kept.
    let (d, _, s) = decide(&p, &s, &evidence(20, 0), &evidence(24, 0), 10_000);
    assert!(matches!(d, Decision::Step { .. }), "{d:?}");
    let c = s.last_check.clone().unwrap();
    assert_eq!(c.gates[0].passed, Some(true));
    assert_eq!(c.evidence.map(|e| (e.seen, e.needed)), Some((0, 10)));
    // A check that is not due keeps the last one.
    let (_, _, same) = decide(&p, &s, &evidence(5, 0), &evidence(5, 0), 10_001);
    assert_eq!(same.last_check, s.last_check);
}
