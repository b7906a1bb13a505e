//! A recall corpus drawn from outside catalogues: token shapes the public scanners document in
//! their rules and sample secrets (gitleaks' `cmd/generate/config/rules`, trufflehog's
//! `pkg/detectors`; read in 2026-11), written down here as prefixes, alphabets and lengths and
//! generated with our own seeded generator. Unlike the held-out corpus, nothing here comes from
//! kcap's catalogue, so a shape the catalogue lacks or states too narrowly shows up as a miss.

use kcap::redact::samples::{Rng, Sample};

/// One piece of a shape: literal text, or `min..=max` characters of an alphabet.
#[derive(Clone, Copy)]
enum Seg {
    L(&'static str),
    R(&'static str, usize, usize),
}
use Seg::{L, R};

const AN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ANL: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const UP: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &str = "0123456789abcdef";
const B32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const W: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const AL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const D: &str = "0123456789";
const BECH: &str = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";

/// Shapes that identify themselves (every context), as (scanner rule, pieces).
const FORMATS: &[(&str, &[Seg])] = &[
    ("gl:github-pat", &[L("ghp_"), R(AN, 36, 36)]),
    ("gl:github-oauth", &[L("gho_"), R(AN, 36, 36)]),
    ("gl:github-app-token", &[L("ghs_"), R(AN, 36, 36)]),
    ("gl:github-refresh-token", &[L("ghr_"), R(AN, 36, 36)]),
    (
        "gl:github-fine-grained-pat",
        &[L("github_pat_"), R(AN, 22, 22), L("_"), R(AN, 59, 59)],
    ),
    ("gl:gitlab-pat", &[L("glpat-"), R(W, 20, 20)]),
    ("gl:gitlab-ptt", &[L("glptt-"), R(HEX, 40, 40)]),
    ("gl:gitlab-rrt", &[L("GR1348941"), R(W, 20, 20)]),
    ("gl:gitlab-runner-token", &[L("glrt-"), R(W, 20, 20)]),
    ("gl:gitlab-deploy-token", &[L("gldt-"), R(W, 20, 20)]),
    ("gl:gitlab-feed-token", &[L("glft-"), R(W, 20, 20)]),
    (
        "gl:gitlab-cicd-job-token",
        &[L("glcbt-"), R(HEX, 1, 5), L("_"), R(W, 20, 20)],
    ),
    ("gl:gitlab-incoming-mail", &[L("glimt-"), R(ANL, 25, 25)]),
    ("gl:gitlab-kubernetes-agent", &[L("glagent-"), R(W, 50, 50)]),
    ("gl:gitlab-oauth-secret", &[L("gloas-"), R(W, 64, 64)]),
    (
        "gl:slack-bot-token",
        &[
            L("xoxb-"),
            R(D, 10, 13),
            L("-"),
            R(D, 10, 13),
            L("-"),
            R(AN, 24, 24),
        ],
    ),
    (
        "gl:slack-user-token",
        &[
            L("xoxp-"),
            R(D, 10, 13),
            L("-"),
            R(D, 10, 13),
            L("-"),
            R(D, 10, 13),
            L("-"),
            R(HEX, 32, 32),
        ],
    ),
    (
        "gl:slack-app-token",
        &[
            L("xapp-1-A"),
            R(UP, 10, 10),
            L("-"),
            R(D, 13, 13),
            L("-"),
            R(HEX, 64, 64),
        ],
    ),
    (
        "gl:slack-webhook-url",
        &[
            L("https://hooks.slack.com/services/T"),
            R(UP, 8, 10),
            L("/B"),
            R(UP, 8, 10),
            L("/"),
            R(AN, 24, 24),
        ],
    ),
    ("gl:stripe-live-secret", &[L("sk_live_"), R(AN, 24, 99)]),
    ("gl:stripe-test-secret", &[L("sk_test_"), R(AN, 24, 99)]),
    ("gl:stripe-restricted", &[L("rk_live_"), R(AN, 24, 99)]),
    ("gl:aws-access-key-akia", &[L("AKIA"), R(B32, 16, 16)]),
    ("gl:aws-access-key-asia", &[L("ASIA"), R(B32, 16, 16)]),
    ("gl:aws-access-key-abia", &[L("ABIA"), R(B32, 16, 16)]),
    ("gl:aws-access-key-acca", &[L("ACCA"), R(B32, 16, 16)]),
    ("gl:gcp-api-key", &[L("AIza"), R(W, 35, 35)]),
    ("th:openai-project", &[L("sk-proj-"), R(W, 156, 156)]),
    (
        "th:openai-legacy",
        &[L("sk-"), R(AN, 20, 20), L("T3BlbkFJ"), R(AN, 20, 20)],
    ),
    (
        "gl:anthropic-api-key",
        &[L("sk-ant-api03-"), R(W, 93, 93), L("AA")],
    ),
    (
        "gl:anthropic-admin-key",
        &[L("sk-ant-admin01-"), R(W, 93, 93), L("AA")],
    ),
    ("gl:huggingface-token", &[L("hf_"), R(AL, 34, 34)]),
    ("gl:huggingface-org-token", &[L("api_org_"), R(AL, 34, 34)]),
    ("gl:npm-access-token", &[L("npm_"), R(ANL, 36, 36)]),
    (
        "gl:pypi-upload-token",
        &[L("pypi-AgEIcHlwaS5vcmc"), R(W, 50, 120)],
    ),
    (
        "gl:sendgrid-api-token",
        &[L("SG."), R(W, 22, 22), L("."), R(W, 43, 43)],
    ),
    ("gl:shopify-access-token", &[L("shpat_"), R(HEX, 32, 32)]),
    ("gl:shopify-custom-app", &[L("shpca_"), R(HEX, 32, 32)]),
    ("gl:shopify-shared-secret", &[L("shpss_"), R(HEX, 32, 32)]),
    ("gl:doppler-api-token", &[L("dp.pt."), R(AN, 43, 43)]),
    ("gl:digitalocean-pat", &[L("dop_v1_"), R(HEX, 64, 64)]),
    ("gl:digitalocean-oauth", &[L("doo_v1_"), R(HEX, 64, 64)]),
    (
        "gl:postman-api-token",
        &[L("PMAK-"), R(HEX, 24, 24), L("-"), R(HEX, 34, 34)],
    ),
    ("gl:linear-api-key", &[L("lin_api_"), R(AN, 40, 40)]),
    ("gl:twilio-api-key", &[L("SK"), R(HEX, 32, 32)]),
    ("gl:age-secret-key", &[L("AGE-SECRET-KEY-1"), R(BECH, 58, 58)]),
    ("gl:databricks-api-token", &[L("dapi"), R(HEX, 32, 32)]),
    (
        "gl:jwt",
        &[
            L("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ"),
            R(W, 40, 120),
            L("."),
            R(W, 43, 43),
        ],
    ),
    ("gl:pulumi-api-token", &[L("pul-"), R(HEX, 40, 40)]),
    ("gl:grafana-cloud-api-token", &[L("glc_"), R(AN, 32, 120)]),
    (
        "gl:grafana-service-account",
        &[L("glsa_"), R(AN, 32, 32), L("_"), R(HEX, 8, 8)],
    ),
    ("gl:vault-service-token", &[L("hvs."), R(W, 90, 120)]),
    ("gl:vault-batch-token", &[L("hvb."), R(W, 138, 212)]),
    (
        "gl:terraform-cloud-token",
        &[R(AN, 14, 14), L(".atlasv1."), R(W, 60, 70)],
    ),
    ("gl:sentry-user-token", &[L("sntryu_"), R(HEX, 64, 64)]),
    ("gl:clojars-api-token", &[L("CLOJARS_"), R(ANL, 60, 60)]),
    ("gl:new-relic-user-api-key", &[L("NRAK-"), R(UP, 27, 27)]),
    ("gl:clickhouse-cloud-key", &[L("4b1d"), R(AN, 38, 38)]),
    (
        "gl:dynatrace-api-token",
        &[L("dt0c01."), R(UP, 24, 24), L("."), R(UP, 64, 64)],
    ),
    ("gl:easypost-api-token", &[L("EZAK"), R(AN, 54, 54)]),
    (
        "gl:flutterwave-secret",
        &[L("FLWSECK_TEST-"), R(HEX, 32, 32), L("-X")],
    ),
    ("gl:planetscale-api-token", &[L("pscale_tkn_"), R(W, 32, 64)]),
    ("gl:planetscale-password", &[L("pscale_pw_"), R(W, 32, 64)]),
    ("gl:prefect-api-token", &[L("pnu_"), R(AN, 36, 36)]),
    ("gl:readme-api-token", &[L("rdme_"), R(ANL, 70, 70)]),
    ("gl:rubygems-api-token", &[L("rubygems_"), R(HEX, 48, 48)]),
    ("gl:scalingo-api-token", &[L("tk-us-"), R(W, 48, 48)]),
    ("gl:shippo-api-token", &[L("shippo_live_"), R(HEX, 40, 40)]),
    ("gl:infracost-api-token", &[L("ico-"), R(AN, 32, 32)]),
    ("gl:frameio-api-token", &[L("fio-u-"), R(W, 64, 64)]),
    ("gl:duffel-api-token", &[L("duffel_test_"), R(W, 43, 43)]),
    ("gl:atlassian-api-token", &[L("ATATT3"), R(W, 186, 186)]),
    ("gl:heroku-api-key-v2", &[L("HRKU-AA"), R(W, 58, 58)]),
    ("gl:octopus-deploy-api-key", &[L("API-"), R(UP, 26, 26)]),
    ("gl:1password-service-account", &[L("ops_eyJ"), R(AN, 250, 300)]),
    (
        "gl:azure-ad-client-secret",
        &[R(AN, 3, 3), R(D, 1, 1), L("Q~"), R(AN, 31, 34)],
    ),
    ("th:groq", &[L("gsk_"), R(AN, 52, 52)]),
    ("th:replicate", &[L("r8_"), R(AN, 37, 37)]),
    (
        "th:langsmith",
        &[L("lsv2_pt_"), R(HEX, 32, 32), L("_"), R(HEX, 10, 10)],
    ),
    ("th:perplexity", &[L("pplx-"), R(AN, 48, 48)]),
    ("th:deno-deploy", &[L("ddp_"), R(AN, 36, 36)]),
    ("th:supabase", &[L("sbp_"), R(HEX, 40, 40)]),
    ("th:render", &[L("rnd_"), R(AN, 32, 32)]),
    (
        "th:tailscale",
        &[L("tskey-api-"), R(AN, 10, 10), L("-"), R(AN, 30, 30)],
    ),
    ("th:docker-pat", &[L("dckr_pat_"), R(W, 27, 27)]),
    ("th:netlify", &[L("nfp_"), R(AN, 36, 36)]),
    ("th:square", &[L("EAAA"), R(W, 60, 60)]),
    ("th:mailgun-signing", &[L("key-"), R(HEX, 32, 32)]),
    ("th:buildkite", &[L("bkua_"), R(HEX, 40, 40)]),
    (
        "th:circleci-personal",
        &[L("CCIPAT_"), R(AN, 22, 22), L("_"), R(HEX, 40, 40)],
    ),
];

/// Shapes that only a vendor's name beside them identifies, as (scanner rule, name, pieces).
const NAMED: &[(&str, &str, &[Seg])] = &[
    ("gl:datadog-access-token", "DATADOG_API_KEY", &[R(AN, 40, 40)]),
    (
        "gl:cloudflare-global-api-key",
        "CLOUDFLARE_API_KEY",
        &[R(HEX, 37, 37)],
    ),
    ("gl:algolia-api-key", "ALGOLIA_API_KEY", &[R(HEX, 32, 32)]),
    (
        "gl:mailchimp-api-key",
        "MAILCHIMP_API_KEY",
        &[R(HEX, 32, 32), L("-us"), R(D, 1, 2)],
    ),
    ("gl:twitter-api-secret", "TWITTER_API_SECRET", &[R(AN, 50, 50)]),
    ("gl:okta-access-token", "OKTA_API_TOKEN", &[L("00"), R(W, 40, 40)]),
    (
        "gl:contentful-delivery",
        "CONTENTFUL_ACCESS_TOKEN",
        &[R(W, 43, 43)],
    ),
    ("gl:zendesk-secret-key", "ZENDESK_API_TOKEN", &[R(ANL, 40, 40)]),
    ("th:cohere", "COHERE_API_KEY", &[R(AN, 40, 40)]),
    ("th:mistral", "MISTRAL_API_KEY", &[R(AN, 32, 32)]),
];

fn generate(rng: &mut Rng, segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match *seg {
            L(t) => s.push_str(t),
            R(alphabet, min, max) => {
                let a = alphabet.as_bytes();
                for _ in 0..min + rng.below(max - min + 1) {
                    s.push(a[rng.below(a.len())] as char);
                }
            }
        }
    }
    s
}

/// `per_rule` secrets of every outside shape, deterministic for `seed`.
pub fn all(seed: u64, per_rule: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for (rule, segs) in FORMATS {
        for _ in 0..per_rule {
            let secret = generate(&mut rng, segs);
            out.push(Sample {
                rule,
                secret,
                vendor_name: None,
            });
        }
    }
    for (rule, name, segs) in NAMED {
        for _ in 0..per_rule {
            out.push(Sample {
                rule,
                secret: generate(&mut rng, segs),
                vendor_name: Some(name.to_string()),
            });
        }
    }
    out
}
