use super::table::{rows, sample_inputs, sample_states};
use super::*;

#[test]
fn every_step_has_at_most_one_answering_command() {
    for row in rows() {
        if let Ok((_, commands)) = &row.outcome {
            let answering = commands.iter().filter(|c| c.answers()).count();
            assert!(
                answering <= 1,
                "{} × {}: {commands:?}",
                row.from.phase.name(),
                row.case
            );
        }
    }
}

#[test]
fn exit_is_emitted_exactly_when_the_machine_stops() {
    for row in rows() {
        if let Ok((to, commands)) = &row.outcome {
            let stops = matches!(to.phase, Phase::Drained { .. } | Phase::Parked { .. });
            let exits = commands.contains(&Command::Exit);
            assert_eq!(stops, exits, "{} × {}", row.from.phase.name(), row.case);
            // A machine that keeps going must have something that brings the next input.
            if !stops {
                assert!(
                    commands.iter().any(Command::answers),
                    "{} × {} stalls",
                    row.from.phase.name(),
                    row.case
                );
            }
        }
    }
}

#[test]
fn drained_rejects_everything_and_every_other_phase_accepts_resume() {
    for state in sample_states() {
        for (case, input) in sample_inputs() {
            let result = step(&state, &input);
            if state.phase.is_terminal() {
                assert!(result.is_err(), "Drained accepted {case}");
            } else if case == "Resumed" {
                assert!(result.is_ok(), "{} refuses Resumed", state.phase.name());
            }
        }
    }
}

#[test]
fn backoff_doubles_from_initial_to_cap() {
    let t = Timings::default();
    let delays: Vec<u64> = (1..=7).map(|n| backoff_ms(&t, n)).collect();
    assert_eq!(delays, [250, 500, 1000, 2000, 4000, 4000, 4000]);
    assert_eq!(backoff_ms(&t, u32::MAX), 4000);
}

#[test]
fn timed_out_drain_takes_the_unterminated_line_and_shutdown_drain_does_not() {
    let t = Timings::default();
    let polling = State {
        timings: t,
        phase: Phase::Polling { deadline: 10 },
    };
    let (_, timed_out) = step(
        &polling,
        &Input::TailObserved {
            now: 10,
            tail: Tail::NotYet,
        },
    )
    .unwrap();
    assert_eq!(
        timed_out,
        [Command::DeliverBatch {
            take_unterminated: true
        }]
    );
    let (_, seen) = step(
        &polling,
        &Input::TailObserved {
            now: 5,
            tail: Tail::Shutdown { offset: 3 },
        },
    )
    .unwrap();
    assert_eq!(
        seen,
        [Command::DeliverBatch {
            take_unterminated: false
        }]
    );
}

#[test]
fn polling_never_sleeps_past_its_deadline() {
    let t = Timings {
        poll_ms: 300,
        ..Timings::default()
    };
    let polling = State {
        timings: t,
        phase: Phase::Polling { deadline: 1_100 },
    };
    let (_, commands) = step(
        &polling,
        &Input::TailObserved {
            now: 1_000,
            tail: Tail::Missing,
        },
    )
    .unwrap();
    assert_eq!(commands, [Command::WakeAt { at: 1_100 }]);
}

#[test]
fn retries_park_once_the_next_attempt_would_pass_the_budget() {
    let t = Timings {
        retry_initial_ms: 100,
        retry_max_ms: 100,
        delivery_budget_ms: 250,
        ..Timings::default()
    };
    let mut state = State {
        timings: t,
        phase: Phase::TimedOut {
            run: Run {
                deadline: 250,
                failures: 0,
            },
        },
    };
    let mut now = 0;
    let mut retries = 0;
    // Bounded, so that a machine that never parks fails here instead of hanging the suite.
    for attempt in 0.. {
        assert!(attempt < 10, "still retrying after {attempt} failures: {state:?}");
        let (next, commands) = step(
            &state,
            &Input::DeliveryFailed {
                now,
                retryable: true,
                error: "x".into(),
            },
        )
        .unwrap();
        state = next;
        match commands.as_slice() {
            [Command::WakeAt { at }] => {
                retries += 1;
                now = *at;
                state = step(&state, &Input::Woke { now }).unwrap().0;
            }
            [Command::Exit] => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        retries, 2,
        "attempts at 0, 100, 200; a retry at 300 would pass 250"
    );
    assert!(
        matches!(state.phase, Phase::Parked { reason: ParkReason::Unreachable { .. }, retry_at, .. } if retry_at == 200 + t.park_retry_ms)
    );
}

#[test]
fn progress_renews_the_delivery_budget() {
    let t = Timings::default();
    let state = State {
        timings: t,
        phase: Phase::ShutdownSeen {
            offset: 9,
            run: Run {
                deadline: 100,
                failures: 3,
            },
        },
    };
    let upto = Watermark {
        next_line: 5,
        offset: 50,
        open_line: false,
    };
    let (next, _) = step(
        &state,
        &Input::BatchAcked {
            now: 90,
            upto: Some(upto),
            drained: false,
        },
    )
    .unwrap();
    assert_eq!(
        next.phase,
        Phase::ShutdownSeen {
            offset: 9,
            run: Run {
                deadline: 90 + t.delivery_budget_ms,
                failures: 0
            }
        }
    );
}

#[test]
fn fold_matches_stepping_and_counts_refused_inputs() {
    let t = Timings::default();
    let inputs = [
        Input::Started { now: 1 },
        Input::TailObserved {
            now: 2,
            tail: Tail::Shutdown { offset: 4 },
        },
        Input::Started { now: 3 }, // refused: already started
        Input::BatchAcked {
            now: 4,
            upto: Some(Watermark {
                next_line: 5,
                offset: 99,
                open_line: false,
            }),
            drained: true,
        },
    ];
    let (state, refused) = fold(State::spawned(t, 0), &inputs);
    assert_eq!(refused, 1);
    assert_eq!(
        state.phase,
        Phase::Drained {
            outcome: Outcome::Shutdown { offset: 4 },
            at: 4
        }
    );
    assert_eq!(watermark_of(&inputs).map(|w| w.next_line), Some(5));
}

#[test]
fn a_sweep_leaves_a_parked_machine_alone_until_its_retry_at() {
    let t = Timings::default();
    let parked = State {
        timings: t,
        phase: Phase::Parked {
            outcome: Outcome::TimedOut,
            reason: ParkReason::Unreachable {
                last_error: "down".into(),
            },
            retry_at: 5_000,
        },
    };
    let early = step(&parked, &Input::Swept { now: 4_999 }).unwrap();
    assert_eq!(early, (parked.clone(), vec![Command::Exit]));
    let due = step(&parked, &Input::Swept { now: 5_000 }).unwrap();
    assert_eq!(due.0.phase.name(), "TimedOut");
    assert_eq!(
        due.1,
        [Command::DeliverBatch {
            take_unterminated: true
        }]
    );
    // By hand, the user need not wait.
    let forced = step(&parked, &Input::Resumed { now: 10 }).unwrap();
    assert_eq!(forced.0.phase.name(), "TimedOut");
    // Elsewhere a sweep is a resume.
    for state in sample_states()
        .into_iter()
        .filter(|s| !matches!(s.phase, Phase::Parked { .. }))
    {
        let now = 1_000;
        assert_eq!(
            step(&state, &Input::Swept { now }).ok(),
            step(&state, &Input::Resumed { now }).ok(),
            "{}",
            state.phase.name()
        );
    }
}

#[test]
fn parking_sets_retry_at_park_retry_ms_after_the_failure() {
    let t = Timings::default();
    let run = Run {
        deadline: 2_000,
        failures: 0,
    };
    let delivering = State {
        timings: t,
        phase: Phase::TimedOut { run },
    };
    let failed = Input::DeliveryFailed {
        now: 1_900,
        retryable: true,
        error: "x".into(),
    };
    let (parked, _) = step(&delivering, &failed).unwrap();
    match parked.phase {
        Phase::Parked { retry_at, .. } => assert_eq!(retry_at, 1_900 + t.park_retry_ms),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_rejection_names_the_phase_and_the_input() {
    let drained = State {
        timings: Timings::default(),
        phase: Phase::Drained {
            outcome: Outcome::TimedOut,
            at: 0,
        },
    };
    let woke = step(&drained, &Input::Woke { now: 1 }).unwrap_err();
    assert_eq!(woke.to_string(), "input Woke is not accepted in phase Drained");
    // A sweep of a drained machine is refused as a sweep, not as the resume it stands for.
    let swept = step(&drained, &Input::Swept { now: 1 }).unwrap_err();
    assert_eq!(swept.to_string(), "input Swept is not accepted in phase Drained");
    for (case, input) in sample_inputs() {
        assert!(case.starts_with(input.name()), "{case} is named {}", input.name());
        assert_eq!(input.now() % 1_000, 0, "{case}");
        assert!(input.now() >= 1_000, "{case}: now is the input's own time");
    }
}

#[test]
fn a_refused_batch_parks_at_once_even_with_budget_left() {
    let t = Timings::default();
    let delivering = State {
        timings: t,
        phase: Phase::ShutdownSeen {
            offset: 7,
            run: Run {
                deadline: 1_000_000,
                failures: 0,
            },
        },
    };
    let refused = Input::DeliveryFailed {
        now: 1_000,
        retryable: false,
        error: "400 bad request".into(),
    };
    let (next, commands) = step(&delivering, &refused).unwrap();
    assert_eq!(commands, [Command::Exit]);
    assert_eq!(
        next.phase,
        Phase::Parked {
            outcome: Outcome::Shutdown { offset: 7 },
            reason: ParkReason::Refused {
                last_error: "400 bad request".into()
            },
            retry_at: 1_000 + t.park_retry_ms,
        }
    );
}

#[test]
fn a_retry_due_exactly_at_the_deadline_is_still_made() {
    let t = Timings {
        retry_initial_ms: 100,
        retry_max_ms: 100,
        ..Timings::default()
    };
    let at_deadline = |now: u64| {
        let delivering = State {
            timings: t,
            phase: Phase::TimedOut {
                run: Run {
                    deadline: 1_100,
                    failures: 0,
                },
            },
        };
        let failed = Input::DeliveryFailed {
            now,
            retryable: true,
            error: "503".into(),
        };
        step(&delivering, &failed).unwrap().1
    };
    // The budget is inclusive: a retry at 1 100 fits a deadline of 1 100, one at 1 101 does not.
    assert_eq!(at_deadline(1_000), [Command::WakeAt { at: 1_100 }]);
    assert_eq!(at_deadline(1_001), [Command::Exit]);
}
