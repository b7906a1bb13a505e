//! The catalogue of vendor secret formats.
//!
//! Written for kcap from the public catalogues of open-source secret scanners, read for their
//! prefixes, lengths, alphabets and keywords (no rule text copied):
//! - "gl" = gitleaks v8.30.0 rule set (config/gitleaks.toml, July 2026),
//! - "th" = trufflehog v3.97.0 detectors (pkg/detectors, August 2026),
//! - "own" = vendor documentation or formats seen in coding-agent transcripts.
//!
//! Two kinds of entry:
//! - [`Format`]: a token that identifies itself (a prefix, a checksum-like infix, a URL shape).
//!   Every format has keywords; the prefilter finds them, and the format's regex runs only there
//!   (anchored at the keyword for prefixes, or searched in the text when the keyword sits inside).
//! - [`Vendor`]: a value that only identifies itself by the vendor's name next to it
//!   (`TWITTER_API_SECRET=…`, `heroku_api_key: <uuid>`): the named-value scanner checks the value
//!   against the vendor's alphabet and length when the name contains one of its words.
//!
//! Every regex is for the `regex` crate (finite automata, no backtracking), every repetition is
//! bounded, so a match attempt costs at most a few kilobytes of look-ahead.

/// Where a format's regex is tried.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum At {
    /// Anchored at each keyword occurrence (the keyword is the token's prefix).
    Keyword,
    /// Searched in the whole text when a keyword occurs anywhere (the keyword is an infix).
    Search,
}

/// An extra test on a match, for formats whose shape alone is too common.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Check {
    None,
    /// Both a digit and a letter (kebab-case words and long identifiers have no digits).
    Mixed,
}

/// A self-identifying token format.
pub(crate) struct Format {
    pub id: &'static str,
    /// Matched ASCII case-insensitively by the prefilter.
    pub keywords: &'static [&'static str],
    pub pattern: &'static str,
    pub at: At,
    pub check: Check,
}

/// A vendor's credential that needs the vendor's name beside it.
pub(crate) struct Vendor {
    pub id: &'static str,
    /// Words that, inside a name, point to this vendor (lower case).
    pub names: &'static [&'static str],
    /// The whole value must match (ASCII case-insensitive, as the vendors' own docs allow).
    pub value: &'static str,
}

macro_rules! tok {
    ($id:literal, [$($kw:literal),+], $re:literal) => {
        Format { id: $id, keywords: &[$($kw),+], pattern: $re, at: At::Keyword, check: Check::None }
    };
    ($id:literal, [$($kw:literal),+], $re:literal, mixed) => {
        Format { id: $id, keywords: &[$($kw),+], pattern: $re, at: At::Keyword, check: Check::Mixed }
    };
}
macro_rules! find {
    ($id:literal, [$($kw:literal),+], $re:literal) => {
        Format { id: $id, keywords: &[$($kw),+], pattern: $re, at: At::Search, check: Check::None }
    };
    ($id:literal, [$($kw:literal),+], $re:literal, mixed) => {
        Format { id: $id, keywords: &[$($kw),+], pattern: $re, at: At::Search, check: Check::Mixed }
    };
}
macro_rules! vendor {
    ($id:literal, [$($name:literal),+], $re:literal) => {
        Vendor { id: $id, names: &[$($name),+], value: $re }
    };
}

/// Self-identifying formats. Order matters only for naming: when two formats find the same
/// range, the first one listed names it in `kcap redact --explain`.
pub(crate) const FORMATS: &[Format] = &[
    // Cloud providers. gl: aws-access-token, aws-amazon-bedrock-*; gl/th: gcp-api-key; own: Google
    // OAuth tokens and client secrets; gl: azure-ad-client-secret, alibaba-access-key-id; th: tencent.
    tok!(
        "aws-access-key-id",
        ["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}"
    ),
    tok!(
        "aws-bedrock-api-key",
        ["ABSK"],
        r"ABSK[A-Za-z0-9+/]{100,300}={0,2}"
    ),
    tok!(
        "aws-bedrock-short-lived-key",
        ["bedrock-api-key-"],
        r"bedrock-api-key-[A-Za-z0-9+/=%&._-]{20,4000}"
    ),
    tok!("google-api-key", ["AIza"], r"AIza[A-Za-z0-9_-]{35}"),
    tok!(
        "google-oauth-client-secret",
        ["GOCSPX-"],
        r"GOCSPX-[A-Za-z0-9_-]{20,40}"
    ),
    tok!(
        "google-oauth-access-token",
        ["ya29."],
        r"ya29\.[A-Za-z0-9_-]{20,2000}"
    ),
    tok!(
        "google-oauth-refresh-token",
        ["1//0"],
        r"1//0[A-Za-z0-9_-]{40,500}"
    ),
    find!(
        "azure-ad-client-secret",
        ["Q~"],
        r"[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}"
    ),
    tok!("alibaba-access-key-id", ["LTAI"], r"LTAI[A-Za-z0-9]{20}"),
    tok!("tencent-secret-id", ["AKID"], r"AKID[A-Za-z0-9]{32}"),
    tok!(
        "digitalocean-token",
        ["doo_v1_", "dop_v1_", "dor_v1_"],
        r"do[opr]_v1_[a-f0-9]{64}"
    ),
    tok!(
        "cloudflare-origin-ca-key",
        ["v1.0-"],
        r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}"
    ),
    tok!("yandex-api-key", ["AQVN"], r"AQVN[A-Za-z0-9_-]{35,38}"),
    tok!(
        "yandex-iam-token",
        ["t1."],
        r"t1\.[A-Za-z0-9_-]{10,200}={0,2}\.[A-Za-z0-9_-]{86}={0,2}"
    ),
    tok!("yandex-access-key", ["YC"], r"YC[A-Za-z0-9_-]{38}", mixed),
    // Version control and CI. gl: github-*, gitlab-* (all token types), bitbucket; th: buildkite,
    // circleci; own: GitLab workspace and runner-registration tokens.
    tok!("github-pat", ["ghp_"], r"ghp_[A-Za-z0-9]{30,255}"),
    tok!("github-oauth", ["gho_"], r"gho_[A-Za-z0-9]{30,255}"),
    tok!("github-user-to-server", ["ghu_"], r"ghu_[A-Za-z0-9]{30,255}"),
    tok!("github-server-to-server", ["ghs_"], r"ghs_[A-Za-z0-9]{30,255}"),
    tok!("github-refresh-token", ["ghr_"], r"ghr_[A-Za-z0-9]{30,255}"),
    tok!(
        "github-fine-grained-pat",
        ["github_pat_"],
        r"github_pat_[A-Za-z0-9_]{22,255}"
    ),
    tok!(
        "gitlab-pat",
        ["glpat-"],
        r"glpat-[A-Za-z0-9_-]{20,300}(?:\.[0-9a-z]{9})?"
    ),
    tok!("gitlab-deploy-token", ["gldt-"], r"gldt-[A-Za-z0-9_-]{20,300}"),
    tok!(
        "gitlab-feature-flag-token",
        ["glffct-"],
        r"glffct-[A-Za-z0-9_-]{20,300}"
    ),
    tok!("gitlab-feed-token", ["glft-"], r"glft-[A-Za-z0-9_-]{20,300}"),
    tok!(
        "gitlab-incoming-mail-token",
        ["glimt-"],
        r"glimt-[A-Za-z0-9_-]{25,300}"
    ),
    tok!(
        "gitlab-agent-token",
        ["glagent-"],
        r"glagent-[A-Za-z0-9_-]{50,300}"
    ),
    tok!(
        "gitlab-oauth-app-secret",
        ["gloas-"],
        r"gloas-[A-Za-z0-9_-]{64,300}"
    ),
    tok!(
        "gitlab-pipeline-trigger-token",
        ["glptt-"],
        r"glptt-[A-Za-z0-9_-]{40,300}"
    ),
    tok!(
        "gitlab-runner-registration-token",
        ["GR1348941"],
        r"GR1348941[A-Za-z0-9_-]{20,300}"
    ),
    tok!(
        "gitlab-runner-token",
        ["glrt-", "glrtr-"],
        r"glrtr?-[A-Za-z0-9_-]{20,300}(?:\.[0-9a-z]{9})?"
    ),
    tok!("gitlab-scim-token", ["glsoat-"], r"glsoat-[A-Za-z0-9_-]{20,300}"),
    tok!(
        "gitlab-ci-job-token",
        ["glcbt-"],
        r"glcbt-[A-Za-z0-9]{1,5}_[A-Za-z0-9_-]{20,300}"
    ),
    tok!("gitlab-workspace-token", ["glwt-"], r"glwt-[A-Za-z0-9_-]{20,300}"),
    tok!(
        "gitlab-session-cookie",
        ["_gitlab_session="],
        r"_gitlab_session=[0-9a-z]{32}"
    ),
    tok!("bitbucket-app-password", ["ATBB"], r"ATBB[A-Za-z0-9_=.-]{32,64}"),
    tok!(
        "atlassian-api-token",
        ["ATATT3", "ATCTT3"],
        r"AT[AC]TT3[A-Za-z0-9_=-]{150,250}"
    ),
    tok!("buildkite-token", ["bkua_"], r"bkua_[a-f0-9]{40}"),
    tok!(
        "circleci-token",
        ["CCIPAT_", "CCIPRJ_"],
        r"CCIP(?:AT|RJ)_[A-Za-z0-9]{20,30}_[a-f0-9]{40}"
    ),
    tok!(
        "sourcegraph-token",
        ["sgp_"],
        r"sgp_(?:[a-fA-F0-9]{16}_|local_)?[a-fA-F0-9]{40}"
    ),
    tok!(
        "sonarqube-token",
        ["squ_", "sqp_", "sqa_"],
        r"sq[uap]_[a-f0-9]{40}"
    ),
    tok!("octopus-deploy-api-key", ["API-"], r"API-[A-Z0-9]{26}", mixed),
    tok!("jfrog-api-key", ["AKCp"], r"AKCp[A-Za-z0-9]{69}"),
    tok!("jfrog-reference-token", ["cmVmd"], r"cmVmd[A-Za-z0-9]{59}"),
    tok!(
        "harness-token",
        ["pat.", "sat."],
        r"[ps]at\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{20}"
    ),
    tok!(
        "travis-ci-token",
        ["travis_"],
        r"travis_[A-Za-z0-9]{22,40}",
        mixed
    ),
    // Chat and webhooks. gl: slack-*, microsoft-teams-webhook, discord; th: discordwebhook, zapier,
    // telegrambottoken.
    tok!(
        "slack-token",
        ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxo-", "xoxe-"],
        r"xox[bparsoe]-[A-Za-z0-9-]{10,255}"
    ),
    tok!(
        "slack-config-token",
        ["xoxe.xox"],
        r"xoxe\.xox[bp]-[0-9]-[A-Za-z0-9]{100,255}"
    ),
    tok!(
        "slack-app-token",
        ["xapp-"],
        r"xapp-[0-9]-[A-Za-z0-9]{6,40}-[0-9]{6,20}-[A-Za-z0-9]{20,100}"
    ),
    find!(
        "slack-webhook-url",
        ["hooks.slack.com"],
        r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,160}"
    ),
    find!(
        "microsoft-teams-webhook",
        ["webhook.office.com"],
        r"[a-z0-9-]+\.webhook\.office\.com/webhookb2/[A-Za-z0-9@/_-]{60,400}"
    ),
    find!(
        "discord-webhook-url",
        ["/api/webhooks/"],
        r"discord(?:app)?\.com/api/webhooks/[0-9]{15,22}/[A-Za-z0-9_-]{50,90}"
    ),
    find!(
        "zapier-webhook-url",
        ["hooks.zapier.com"],
        r"hooks\.zapier\.com/hooks/catch/[0-9]{3,12}/[A-Za-z0-9]{4,12}"
    ),
    find!("telegram-bot-token", [":AA"], r"[0-9]{8,10}:AA[A-Za-z0-9_-]{33}"),
    // Payments. gl: stripe-access-token, square-*, shippo, duffel, flutterwave, easypost, lob;
    // th: stripe webhook secrets, braintree.
    tok!(
        "stripe-secret-key",
        ["sk_live_", "sk_test_", "sk_prod_"],
        r"sk_(?:live|test|prod)_[A-Za-z0-9]{10,255}"
    ),
    tok!(
        "stripe-restricted-key",
        ["rk_live_", "rk_test_", "rk_prod_"],
        r"rk_(?:live|test|prod)_[A-Za-z0-9]{10,255}"
    ),
    tok!(
        "stripe-webhook-secret",
        ["whsec_"],
        r"whsec_[A-Za-z0-9+/=]{24,100}"
    ),
    tok!(
        "square-access-token",
        ["sq0atp-", "EAAA"],
        r"(?:sq0atp-|EAAA)[A-Za-z0-9_-]{22,60}",
        mixed
    ),
    tok!("square-oauth-secret", ["sq0csp-"], r"sq0csp-[A-Za-z0-9_-]{40,50}"),
    tok!(
        "braintree-access-token",
        ["access_token$"],
        r"access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32}"
    ),
    tok!(
        "shippo-token",
        ["shippo_"],
        r"shippo_(?:live|test)_[a-fA-F0-9]{40}"
    ),
    tok!(
        "duffel-token",
        ["duffel_"],
        r"duffel_(?:test|live)_[A-Za-z0-9_=-]{43}"
    ),
    tok!(
        "flutterwave-key",
        ["FLWSECK", "FLWPUBK"],
        r"FLW(?:SECK|PUBK)(?:_TEST)?-[a-hA-H0-9]{12,32}(?:-X)?"
    ),
    tok!("easypost-key", ["EZAK", "EZTK"], r"EZ[AT]K[A-Za-z0-9]{54}"),
    tok!("gocardless-token", ["live_"], r"live_[A-Za-z0-9_=-]{40}", mixed),
    // AI providers. th: anthropic, openai, groq, xai, replicate, langsmith, openrouter, perplexity,
    // pinecone, huggingface; gl: cohere (by name), perplexity.
    tok!("anthropic-api-key", ["sk-ant-"], r"sk-ant-[A-Za-z0-9_-]{20,300}"),
    tok!("openrouter-api-key", ["sk-or-v1-"], r"sk-or-v1-[0-9a-f]{64}"),
    tok!(
        "openai-api-key",
        ["sk-proj-", "sk-svcacct-", "sk-admin-", "sk-None-"],
        r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,300}"
    ),
    tok!(
        "openai-style-api-key",
        ["sk-"],
        r"sk-[A-Za-z0-9_-]{32,300}",
        mixed
    ),
    tok!("groq-api-key", ["gsk_"], r"gsk_[A-Za-z0-9]{52}"),
    tok!("xai-api-key", ["xai-"], r"xai-[A-Za-z0-9_]{80}"),
    tok!("replicate-token", ["r8_"], r"r8_[A-Za-z0-9_-]{37}"),
    tok!(
        "langsmith-key",
        ["lsv2_"],
        r"lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}"
    ),
    tok!("perplexity-api-key", ["pplx-"], r"pplx-[A-Za-z0-9]{48}"),
    tok!("pinecone-api-key", ["pcsk_"], r"pcsk_[A-Za-z0-9_]{50,100}"),
    tok!("huggingface-token", ["hf_"], r"hf_[A-Za-z0-9]{34,40}"),
    tok!("huggingface-org-token", ["api_org_"], r"api_org_[A-Za-z0-9]{34}"),
    tok!(
        "tavily-api-key",
        ["tvly-"],
        r"tvly-(?:dev-|prod-)?[A-Za-z0-9]{32}"
    ),
    // Observability. gl: sentry-*, grafana-*, new-relic-*, dynatrace; th: datadog (by name).
    tok!(
        "sentry-org-token",
        ["sntrys_"],
        r"sntrys_eyJ[A-Za-z0-9+/=_]{50,800}"
    ),
    tok!("sentry-user-token", ["sntryu_"], r"sntryu_[a-f0-9]{64}"),
    find!(
        "sentry-dsn",
        ["sentry.io", "ingest.sentry"],
        r"https?://([a-f0-9]{32})@[A-Za-z0-9.-]*sentry\.io"
    ),
    tok!(
        "grafana-api-key",
        ["eyJrIjoi"],
        r"eyJrIjoi[A-Za-z0-9]{70,400}={0,3}"
    ),
    tok!(
        "grafana-cloud-token",
        ["glc_"],
        r"glc_[A-Za-z0-9+/]{32,400}={0,3}"
    ),
    tok!(
        "grafana-service-account-token",
        ["glsa_"],
        r"glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"
    ),
    tok!(
        "new-relic-key",
        ["NRAK-", "NRII-", "NRJS-", "NRAA-"],
        r"NR(?:AK-[A-Z0-9]{27}|II-[A-Za-z0-9-]{32}|JS-[a-f0-9]{19}|AA-[a-f0-9]{27})"
    ),
    tok!(
        "dynatrace-token",
        ["dt0c01."],
        r"dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}"
    ),
    // Hosting, databases, infrastructure. gl: vault-*, hashicorp-tf-api-token, pulumi, doppler,
    // databricks, planetscale, fly.io, heroku-v2, openshift, clickhouse, prefect, infracost,
    // scalingo, defined-networking, age, 1password; th: supabase, netlify, render, tailscale,
    // vercel, docker.
    tok!("vault-service-token", ["hvs."], r"hvs\.[A-Za-z0-9_-]{24,300}"),
    tok!("vault-batch-token", ["hvb."], r"hvb\.[A-Za-z0-9_-]{100,400}"),
    tok!("vault-recovery-token", ["hvr."], r"hvr\.[A-Za-z0-9_-]{24,300}"),
    find!(
        "terraform-cloud-token",
        ["atlasv1"],
        r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}"
    ),
    tok!("pulumi-token", ["pul-"], r"pul-[a-f0-9]{40}"),
    tok!(
        "doppler-token",
        ["dp.pt.", "dp.st.", "dp.ct.", "dp.sa.", "dp.scim.", "dp.audit."],
        r"dp\.(?:pt|st|ct|sa|scim|audit)\.[A-Za-z0-9_.-]{40,60}"
    ),
    tok!("databricks-token", ["dapi"], r"dapi[a-f0-9]{32}(?:-[0-9])?"),
    tok!(
        "planetscale-token",
        ["pscale_tkn_", "pscale_oauth_", "pscale_pw_"],
        r"pscale_(?:tkn|oauth|pw)_[A-Za-z0-9_=.-]{32,64}"
    ),
    tok!(
        "flyio-token",
        ["fo1_", "fm1", "fm2_"],
        r"(?:fo1_[A-Za-z0-9_-]{43}|fm1[ar]_[A-Za-z0-9+/]{100,2000}={0,3}|fm2_[A-Za-z0-9+/]{100,2000}={0,3})"
    ),
    tok!("heroku-api-key", ["HRKU-"], r"HRKU-AA[A-Za-z0-9_-]{58}"),
    tok!("openshift-token", ["sha256~"], r"sha256~[A-Za-z0-9_-]{43}"),
    tok!("clickhouse-cloud-key", ["4b1d"], r"4b1d[A-Za-z0-9]{38}"),
    tok!("prefect-token", ["pnu_"], r"pnu_[A-Za-z0-9]{36}"),
    tok!("infracost-token", ["ico-"], r"ico-[A-Za-z0-9]{32}"),
    tok!("scalingo-token", ["tk-us-"], r"tk-us-[A-Za-z0-9_-]{48}"),
    tok!(
        "defined-networking-token",
        ["dnkey-"],
        r"dnkey-[A-Za-z0-9=_-]{26}-[A-Za-z0-9=_-]{52}"
    ),
    tok!(
        "age-secret-key",
        ["AGE-SECRET-KEY-1"],
        r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"
    ),
    tok!(
        "onepassword-secret-key",
        ["A3-"],
        r"A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}"
    ),
    tok!(
        "onepassword-service-token",
        ["ops_eyJ"],
        r"ops_eyJ[A-Za-z0-9+/]{250,3000}={0,3}"
    ),
    tok!("supabase-token", ["sbp_"], r"sbp_[a-f0-9]{40}"),
    tok!(
        "supabase-secret-key",
        ["sb_secret_"],
        r"sb_secret_[A-Za-z0-9_-]{20,64}"
    ),
    tok!("netlify-token", ["nfp_"], r"nfp_[A-Za-z0-9]{36,40}"),
    // gl: twilio-api-key (2026-11): `SK` and 32 hex digits identify themselves. The keyword is
    // common in words (`task`, `skip`); a word start and the case-sensitive pattern keep it cheap.
    tok!("twilio-api-key-sid", ["SK"], r"SK[0-9a-fA-F]{32}", mixed),
    // th: denodeploy (2026-11).
    tok!("deno-deploy-token", ["ddp_"], r"ddp_[A-Za-z0-9]{36}"),
    tok!("render-api-key", ["rnd_"], r"rnd_[A-Za-z0-9]{32}"),
    tok!(
        "tailscale-key",
        ["tskey-"],
        r"tskey-[a-z]{3,10}-[A-Za-z0-9_]{6,40}-[A-Za-z0-9_]{10,80}"
    ),
    tok!(
        "docker-hub-token",
        ["dckr_pat_", "dckr_oat_"],
        r"dckr_(?:pat|oat)_[A-Za-z0-9_-]{20,100}"
    ),
    tok!(
        "cloudinary-url",
        ["cloudinary://"],
        r"cloudinary://[0-9]{10,20}:[A-Za-z0-9_-]{20,40}@[a-z0-9_-]+"
    ),
    tok!(
        "mongodb-atlas-key",
        ["mdb_sa_sk_"],
        r"mdb_sa_sk_[A-Za-z0-9_-]{30,80}"
    ),
    // Packages. gl: npm, pypi, rubygems, clojars, nuget-config; th: nuget api key.
    tok!("npm-token", ["npm_"], r"npm_[A-Za-z0-9]{36}"),
    tok!("pypi-token", ["pypi-"], r"pypi-[A-Za-z0-9_-]{50,1000}"),
    tok!("rubygems-token", ["rubygems_"], r"rubygems_[a-f0-9]{48}"),
    tok!("clojars-token", ["CLOJARS_"], r"CLOJARS_[A-Za-z0-9]{60}"),
    tok!("nuget-api-key", ["oy2"], r"oy2[a-z0-9]{43}"),
    tok!("jsr-token", ["jsrp_"], r"jsrp_[A-Za-z0-9]{20,60}"),
    // Productivity and SaaS. gl: notion, linear, airtable, asana (by name), postman, typeform,
    // readme, sendgrid, sendinblue, mailgun, mailchimp, maxmind, mapbox, intra42, settlemint,
    // adobe, artifactory, authress, beamer (by name), frame.io, dropbox, facebook, twitter;
    // th: figma, contentful, resend, mailersend, launchdarkly, ngrok.
    tok!("notion-token", ["ntn_"], r"ntn_[0-9]{11}[A-Za-z0-9]{35}"),
    tok!(
        "notion-legacy-token",
        ["secret_"],
        r"secret_[A-Za-z0-9]{43}",
        mixed
    ),
    tok!("linear-api-key", ["lin_api_"], r"lin_api_[A-Za-z0-9]{40}"),
    tok!(
        "postman-api-key",
        ["PMAK-"],
        r"PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}"
    ),
    tok!("typeform-token", ["tfp_"], r"tfp_[A-Za-z0-9_.=-]{59}"),
    tok!("readme-api-key", ["rdme_"], r"rdme_[a-z0-9]{70}"),
    tok!(
        "sendgrid-api-key",
        ["SG."],
        r"SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"
    ),
    tok!(
        "sendinblue-api-key",
        ["xkeysib-", "xsmtpsib-"],
        r"x(?:keysib|smtpsib)-[a-f0-9]{64}-[A-Za-z0-9]{16}"
    ),
    tok!("mailgun-key", ["key-"], r"key-[a-f0-9]{32}", mixed),
    find!("mailchimp-api-key", ["-us"], r"[a-f0-9]{32}-us[0-9]{1,2}"),
    tok!("mailersend-token", ["mlsn."], r"mlsn\.[a-f0-9]{64}"),
    tok!("resend-api-key", ["re_"], r"re_[A-Za-z0-9]{8}_[A-Za-z0-9]{24}"),
    find!(
        "maxmind-license-key",
        ["_mmk"],
        r"[A-Za-z0-9]{6}_[A-Za-z0-9]{29}_mmk"
    ),
    tok!(
        "mapbox-secret-token",
        ["sk.eyJ"],
        r"sk\.eyJ[A-Za-z0-9_-]{50,300}\.[A-Za-z0-9_-]{20,40}"
    ),
    tok!("intra42-secret", ["s-s4t2"], r"s-s4t2(?:ud|af)-[a-f0-9]{64}"),
    tok!(
        "settlemint-token",
        ["sm_aat_", "sm_pat_", "sm_sat_"],
        r"sm_(?:aat|pat|sat)_[A-Za-z0-9]{16}"
    ),
    tok!("adobe-client-secret", ["p8e-"], r"p8e-[A-Za-z0-9]{32}"),
    find!(
        "authress-key",
        [".acc_", ".acc-"],
        r"(?:sc|ext|scauth|authress)_[A-Za-z0-9]{5,30}\.[A-Za-z0-9]{4,6}\.acc[_-][A-Za-z0-9-]{10,32}\.[A-Za-z0-9+/_=-]{30,120}"
    ),
    tok!("frameio-token", ["fio-u-"], r"fio-u-[A-Za-z0-9_=-]{64}"),
    tok!(
        "dropbox-short-lived-token",
        ["sl."],
        r"sl\.[A-Za-z0-9_=-]{130,160}"
    ),
    tok!(
        "facebook-page-token",
        ["EAAM", "EAAC"],
        r"EAA[MC][A-Za-z0-9]{100,400}"
    ),
    tok!(
        "twitter-bearer-token",
        ["AAAAAAAAAAAAAAAAAAAAA"],
        r"A{22}[A-Za-z0-9%]{80,120}"
    ),
    tok!("figma-token", ["figd_"], r"figd_[A-Za-z0-9_-]{40,50}"),
    tok!("contentful-token", ["CFPAT-"], r"CFPAT-[A-Za-z0-9_-]{43}"),
    tok!(
        "launchdarkly-key",
        ["api-", "sdk-", "mob-"],
        r"(?:api|sdk|mob)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    tok!(
        "shopify-token",
        ["shpat_", "shpca_", "shppa_", "shpss_"],
        r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"
    ),
    // Generic shapes that carry their own marker. gl: jwt, jwt-base64, private-key (done by hand in
    // pem.rs), curl-auth-header (done by the named scanner).
    tok!(
        "jwt",
        ["eyJ"],
        r"eyJ[A-Za-z0-9_-]{10,4000}\.eyJ[A-Za-z0-9_-]{10,8000}\.[A-Za-z0-9_-]{0,2000}"
    ),
    tok!("jwt-base64", ["ZXlK"], r"ZXlK[A-Za-z0-9+/]{60,8000}={0,2}"),
    tok!(
        "bearer-token",
        ["bearer "],
        r"[Bb]earer [A-Za-z0-9_~+/.=-]{20,4000}",
        mixed
    ),
    // pgpass lines: host:port:database:user:password, one per text line.
    find!(
        "pgpass-line",
        [":5432:", ":5433:", ":6432:", ":*:"],
        r"(?m)^[A-Za-z0-9_.*-]{1,253}:(?:[0-9]{1,5}|\*):[^:\s]{1,128}:[^:\s]{1,128}:([^\s]{1,256})"
    ),
    // own: `az storage account keys list` (JSON, table, tsv): a 64-byte key in base64 beside
    // `keyName` / `key1`, with no credential name on its line.
    find!(
        "azure-storage-key-listing",
        ["keyname", "key1", "key2"],
        r"(?:^|[^A-Za-z0-9+/=-])([A-Za-z0-9+/]{86}==)"
    ),
];

/// Vendor credentials recognised by the vendor's name in the key. gl: the "<vendor> + alphabet"
/// rules (adafruit … zendesk); th: the same vendors' detectors for lengths.
pub(crate) const VENDORS: &[Vendor] = &[
    vendor!("adafruit-api-key", ["adafruit"], r"[a-z0-9_-]{32}"),
    vendor!("adobe-client-id", ["adobe"], r"[a-f0-9]{32}"),
    vendor!(
        "airtable-api-key",
        ["airtable"],
        r"[a-z0-9]{17}|pat[a-z0-9]{14}\.[a-f0-9]{64}"
    ),
    vendor!("algolia-api-key", ["algolia"], r"[a-z0-9]{32}"),
    vendor!("alibaba-secret-key", ["alibaba", "aliyun"], r"[a-z0-9]{30}"),
    vendor!(
        "asana-credential",
        ["asana"],
        r"[0-9]{16}|[a-z0-9]{32}|[0-9]/[0-9]{10,20}:[a-f0-9]{32}"
    ),
    vendor!(
        "atlassian-token",
        ["atlassian", "confluence", "jira"],
        r"[a-z0-9]{24}"
    ),
    vendor!("auth0-credential", ["auth0"], r"[a-z0-9_-]{32,64}"),
    vendor!("aws-secret-access-key", ["aws"], r"[a-z0-9/+]{40}"),
    vendor!(
        "azure-devops-pat",
        ["azure", "devops", "ado_"],
        r"[a-z0-9]{52}|[a-z0-9]{84}"
    ),
    vendor!(
        "azure-storage-key",
        ["accountkey", "storage_key", "storagekey", "storage_account"],
        r"[a-z0-9/+]{86}=="
    ),
    // own: the `value` of a key listing (`az storage account keys list`, Cosmos DB keys): only
    // a 64-byte key's exact base64 shape counts.
    vendor!("azure-key-listing-value", ["value"], r"[a-z0-9/+]{86}=="),
    vendor!("beamer-token", ["beamer"], r"b_[a-z0-9=_-]{44}"),
    vendor!(
        "bitbucket-credential",
        ["bitbucket"],
        r"[a-z0-9]{32}|[a-z0-9=_-]{64}"
    ),
    vendor!("bittrex-key", ["bittrex"], r"[a-z0-9]{32}"),
    vendor!("cisco-meraki-key", ["meraki"], r"[0-9a-f]{40}"),
    vendor!(
        "circleci-personal-token",
        ["circleci", "circle_token"],
        r"[a-f0-9]{40}"
    ),
    vendor!(
        "cloudflare-key",
        ["cloudflare", "cf_api"],
        r"[a-z0-9_-]{40}|[a-f0-9]{37}"
    ),
    vendor!("codecov-token", ["codecov"], r"[a-z0-9]{32}|[0-9a-f-]{36}"),
    vendor!("cohere-api-key", ["cohere", "co_api_key"], r"[a-z0-9]{40}"),
    vendor!("coinbase-token", ["coinbase"], r"[a-z0-9_-]{64}"),
    vendor!("confluent-key", ["confluent"], r"[a-z0-9]{16}|[a-z0-9]{64}"),
    vendor!("contentful-delivery-token", ["contentful"], r"[a-z0-9=_-]{43}"),
    vendor!(
        "datadog-key",
        ["datadog", "dd_api", "dd_app"],
        r"[a-z0-9]{32}|[a-z0-9]{40}"
    ),
    vendor!("deepseek-api-key", ["deepseek"], r"sk-[a-f0-9]{32}"),
    vendor!(
        "discord-credential",
        ["discord"],
        r"[a-f0-9]{64}|[0-9]{18}|[a-z0-9=_-]{32}|[mno][a-z0-9_-]{23,25}\.[a-z0-9_-]{6}\.[a-z0-9_-]{27,38}"
    ),
    vendor!("droneci-token", ["droneci", "drone_token"], r"[a-z0-9]{32}"),
    vendor!(
        "dropbox-token",
        ["dropbox"],
        r"[a-z0-9]{15}|[a-z0-9]{11}AAAAAAAAAA[a-z0-9_=-]{43}"
    ),
    vendor!("etsy-token", ["etsy"], r"[a-z0-9]{24}"),
    vendor!(
        "facebook-secret",
        ["facebook", "fb_app"],
        r"[a-f0-9]{32}|[0-9]{15,16}[|%][0-9a-z_-]{27,40}"
    ),
    vendor!("fastly-token", ["fastly"], r"[a-z0-9=_-]{32}"),
    vendor!("finicity-credential", ["finicity"], r"[a-f0-9]{32}|[a-z0-9]{20}"),
    vendor!("finnhub-token", ["finnhub"], r"[a-z0-9]{20}"),
    vendor!("flickr-token", ["flickr"], r"[a-z0-9]{32}"),
    vendor!("freshbooks-token", ["freshbooks"], r"[a-z0-9]{64}"),
    vendor!("gitter-token", ["gitter"], r"[a-z0-9_-]{40}"),
    vendor!(
        "heroku-legacy-api-key",
        ["heroku"],
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!(
        "hubspot-api-key",
        ["hubspot"],
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|pat-[a-z0-9]{2,4}-[0-9a-f-]{36}"
    ),
    vendor!("intercom-token", ["intercom"], r"[a-z0-9=_-]{60}"),
    vendor!(
        "jfrog-credential",
        ["jfrog", "artifactory", "bintray", "xray"],
        r"[a-z0-9]{64}|[a-z0-9]{73}"
    ),
    vendor!("kraken-token", ["kraken"], r"[a-z0-9/=_+-]{80,90}"),
    vendor!(
        "kucoin-credential",
        ["kucoin"],
        r"[a-f0-9]{24}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!("launchdarkly-token", ["launchdarkly"], r"[a-z0-9=_-]{40}"),
    vendor!(
        "linear-client-secret",
        ["linear_client", "linear_api", "linearclient", "linearapi"],
        r"[a-f0-9]{32}"
    ),
    vendor!(
        "linkedin-credential",
        ["linkedin", "linked_in", "linked-in"],
        r"[a-z0-9]{14}|[a-z0-9]{16}"
    ),
    vendor!(
        "lob-api-key",
        ["lob_", "lob-", "lobapi"],
        r"(?:live|test)_(?:pub_)?[a-f0-9]{31,35}"
    ),
    vendor!("looker-credential", ["looker"], r"[a-z0-9]{20}|[a-z0-9]{24}"),
    vendor!(
        "mailgun-credential",
        ["mailgun"],
        r"(?:pub)?key-[a-f0-9]{32}|[a-h0-9]{32}-[a-h0-9]{8}-[a-h0-9]{8}"
    ),
    vendor!("mapbox-token", ["mapbox"], r"pk\.[a-z0-9]{60}\.[a-z0-9]{22}"),
    vendor!("mattermost-token", ["mattermost"], r"[a-z0-9]{26}"),
    vendor!(
        "messagebird-credential",
        ["messagebird", "message_bird", "message-bird"],
        r"[a-z0-9]{25}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!("netlify-access-token", ["netlify"], r"[a-z0-9=_-]{40,46}"),
    vendor!(
        "new-relic-credential",
        ["newrelic", "new_relic", "new-relic"],
        r"[a-z0-9]{64}|[a-f0-9]{40}"
    ),
    vendor!(
        "ngrok-token",
        ["ngrok"],
        r"[0-9a-z]{27}_[0-9a-z]{21}|[0-9a-z]{48,49}"
    ),
    vendor!("nytimes-token", ["nytimes", "newyorktimes"], r"[a-z0-9=_-]{32}"),
    vendor!("okta-token", ["okta"], r"00[a-z0-9=_-]{40}"),
    vendor!("pagerduty-key", ["pagerduty"], r"[a-z0-9_+-]{20}|[a-f0-9]{32}"),
    vendor!(
        "plaid-credential",
        ["plaid"],
        r"[a-z0-9]{24}|[a-z0-9]{30}|access-(?:sandbox|development|production)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!(
        "postmark-token",
        ["postmark"],
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!(
        "privateai-token",
        ["privateai", "private_ai", "private-ai"],
        r"[a-z0-9]{32}"
    ),
    vendor!("rapidapi-token", ["rapidapi"], r"[a-z0-9_-]{50}"),
    vendor!(
        "segment-write-key",
        ["segment_write", "segmentwrite", "segment_key"],
        r"[a-z0-9]{32}"
    ),
    vendor!(
        "sendbird-credential",
        ["sendbird"],
        r"[a-f0-9]{40}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!("sentry-auth-token", ["sentry"], r"[a-f0-9]{64}|[a-f0-9]{32}"),
    vendor!("sidekiq-secret", ["contribsys"], r"[a-f0-9]{8}:[a-f0-9]{8}"),
    vendor!(
        "snyk-token",
        ["snyk"],
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!("sonar-token", ["sonar"], r"(?:squ_|sqp_|sqa_)?[a-z0-9=_-]{40}"),
    vendor!(
        "squarespace-token",
        ["squarespace"],
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    ),
    vendor!("sumologic-credential", ["sumo"], r"su[a-z0-9]{12}|[a-z0-9]{64}"),
    vendor!("twilio-api-key", ["twilio"], r"sk[0-9a-f]{32}"),
    vendor!(
        "elevenlabs-api-key",
        ["elevenlabs", "xi_api_key", "xi-api-key"],
        r"sk_[a-f0-9]{48}"
    ),
    vendor!(
        "telegram-bot-token-named",
        ["telegr"],
        r"[0-9]{5,16}:a[a-z0-9_-]{34}"
    ),
    vendor!("travisci-token", ["travis"], r"[a-z0-9]{22}"),
    vendor!("twitch-token", ["twitch"], r"[a-z0-9]{30}"),
    vendor!(
        "twitter-credential",
        ["twitter"],
        r"[a-z0-9]{25}|[a-z0-9]{45}|[a-z0-9]{50}|[0-9]{15,25}-[a-z0-9]{20,40}|a{22}[a-z0-9%]{80,100}"
    ),
    vendor!(
        "vault-token",
        ["vault"],
        r"s\.[a-z0-9]{24}|hvs\.[a-z0-9_-]{90,120}"
    ),
    vendor!(
        "yandex-credential",
        ["yandex"],
        r"aqvn[a-z0-9_-]{35,38}|yc[a-z0-9_-]{38}|t1\.[a-z0-9_-]+={0,2}\.[a-z0-9_-]{86}={0,2}"
    ),
    vendor!("zendesk-secret", ["zendesk"], r"[a-z0-9]{40}"),
];
