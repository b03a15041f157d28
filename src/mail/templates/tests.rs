//! Unit tests of the templates: every kind in every locale, escaping, overrides and the
//! errors a broken override gives.

use super::*;

fn builtin() -> Templates {
    Templates::load(None).expect("built-in templates load")
}

fn sample(kind: EmailKind, locale: Locale) -> TemplateContext {
    samples(kind, locale).remove(0)
}

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kinds_parse_from_their_names() {
    for kind in EmailKind::ALL {
        assert_eq!(kind.as_str().parse::<EmailKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert!("reminder".parse::<EmailKind>().is_err());
}

#[test]
fn every_template_renders_for_every_locale() {
    let t = builtin();
    t.check_all().expect("all samples render");
    for locale in Locale::ALL {
        for kind in EmailKind::ALL {
            for ctx in samples(kind, locale) {
                let e = t.render_in(kind, locale, &ctx).unwrap();
                let all = format!("{}\n{}\n{}", e.subject, e.text, e.html)
                    .replace("display:none", "")
                    .replace("text-decoration:none", "");
                assert!(!e.subject.is_empty() && !e.subject.contains(['\r', '\n']));
                assert!(
                    e.subject.chars().count() <= 80,
                    "{kind}/{locale} subject too long: {}",
                    e.subject
                );
                for bad in ["{{", "{%", "none", "None", "undefined"] {
                    assert!(!all.contains(bad), "{kind}/{locale} shows {bad:?}:\n{all}");
                }
                assert!(e.html.contains("max-width:600px"), "{kind}/{locale}");
                assert!(e.html.contains("name=\"viewport\""));
                assert!(!e.html.contains("<img"), "no images");
                assert!(!e.html.contains("<style"), "inline styles only");
                assert!(!e.text.contains("\n\n\n") && !e.text.contains(" \n"));
                assert!(e.text.ends_with('\n') && !e.text.ends_with("\n\n"));
                assert!(e.text.contains(&ctx.agreement_ref) && e.html.contains(&ctx.agreement_ref));
                let key_amount = match kind {
                    EmailKind::BalanceLow => ctx.shortfall.clone().unwrap(),
                    EmailKind::Overdue | EmailKind::CreditWarning => {
                        ctx.amount_overdue.clone().unwrap()
                    }
                    _ => ctx.amount.clone(),
                };
                for part in [&e.subject, &e.text, &e.html] {
                    assert!(
                        part.contains(&key_amount),
                        "{kind}/{locale}: {key_amount} missing in {part}"
                    );
                }
                // Each fact on its own line: a line ending in a block tag would glue the
                // next one on (trim_blocks).
                assert!(e.text.contains("\n--\n"), "{kind}/{locale}:\n{}", e.text);
                if locale == Locale::ZhCn {
                    assert!(e.text.contains("您好") && e.html.contains("lang=\"zh-CN\""));
                    assert!(
                        e.text.contains("\n协议编号：AGR-2025-0042\n"),
                        "{kind}:\n{}",
                        e.text
                    );
                } else {
                    assert!(e.text.starts_with("Hi ") && e.html.contains("lang=\"en\""));
                    assert!(e.text.contains("\nAgreement:"), "{kind}:\n{}", e.text);
                }
            }
        }
    }
}

#[test]
fn upcoming_says_whether_the_account_holds_enough() {
    let t = builtin();
    let samples = samples(EmailKind::Upcoming, Locale::En);
    let enough = t
        .render_in(EmailKind::Upcoming, Locale::En, &samples[0])
        .unwrap();
    assert!(
        enough
            .text
            .contains("Your account ending 3000 has enough for this payment")
    );
    assert_eq!(
        enough.subject,
        "Payment of ¥1,066.19 due 31 Jan: your account is ready"
    );
    let short = t
        .render_in(EmailKind::Upcoming, Locale::En, &samples[1])
        .unwrap();
    assert!(short.text.contains(
        "Your account ending 3000 is short by ¥120.50. Please top up by 18:00 on Friday, 30 January 2026"
    ), "{}", short.text);
    assert!(short.html.contains("is short by <strong>¥120.50</strong>"));
    assert_eq!(
        short.subject,
        "Top up ¥120.50 before your ¥1,066.19 payment on 31 Jan"
    );

    let zh = samples_zh(EmailKind::Upcoming);
    let enough = t
        .render_in(EmailKind::Upcoming, Locale::ZhCn, &zh[0])
        .unwrap();
    assert!(
        enough.text.contains("您尾号3000的账户余额充足"),
        "{}",
        enough.text
    );
    assert!(enough.text.contains("还款日为2026年1月31日（星期六）"));
    let short = t
        .render_in(EmailKind::Upcoming, Locale::ZhCn, &zh[1])
        .unwrap();
    assert!(
        short
            .text
            .contains("您尾号3000的账户目前还差¥120.50，请在2026年1月30日（星期五）18:00前充值"),
        "{}",
        short.text
    );
    assert_eq!(short.subject, "请充值¥120.50：1月31日将扣款¥1,066.19");
}

fn samples_zh(kind: EmailKind) -> Vec<TemplateContext> {
    samples(kind, Locale::ZhCn)
}

#[test]
fn a_retry_placed_by_payday_says_after_your_usual_payday_in_both_languages() {
    let t = builtin();
    for (locale, words) in [
        (
            Locale::En,
            "We'll try again at 06:00 on Tuesday, 10 February 2026, after your usual payday.",
        ),
        (Locale::ZhCn, "（在您通常的发薪日之后）再次尝试扣款"),
    ] {
        let all = samples(EmailKind::DebitFailed, locale);
        let payday = all.last().unwrap();
        assert!(payday.after_payday);
        let mail = t.render_in(EmailKind::DebitFailed, locale, payday).unwrap();
        assert!(mail.text.contains(words), "{}", mail.text);
        let html_words = if locale == Locale::En {
            "after your usual payday"
        } else {
            "在您通常的发薪日之后"
        };
        assert!(mail.html.contains(html_words), "{}", mail.html);
        // Without the flag, not a word of it.
        let plain = t
            .render_in(EmailKind::DebitFailed, locale, &all[0])
            .unwrap();
        assert!(!plain.text.contains("payday") && !plain.text.contains("发薪日"));
    }
}

#[test]
fn debit_failed_says_what_happened_and_what_next() {
    let t = builtin();
    let all = samples(EmailKind::DebitFailed, Locale::En);
    let retry = t
        .render_in(EmailKind::DebitFailed, Locale::En, &all[0])
        .unwrap();
    assert!(
        retry
            .text
            .contains("didn't have enough money (it was short by ¥120.50)")
    );
    assert!(
        retry
            .text
            .contains("We'll try again at 06:00 on Sunday, 1 February 2026")
    );
    assert!(retry.text.contains("No money has been taken."));
    let last = t
        .render_in(EmailKind::DebitFailed, Locale::En, &all[1])
        .unwrap();
    assert!(
        last.text
            .contains("We won't try to collect this payment again automatically")
    );
    assert!(
        last.text
            .contains("Please contact Example Finance to arrange the payment.")
    );
    let mandate = t
        .render_in(
            EmailKind::DebitFailed,
            Locale::ZhCn,
            &samples_zh(EmailKind::DebitFailed)[7],
        )
        .unwrap();
    assert!(
        mandate.text.contains("自动扣款授权已失效"),
        "{}",
        mandate.text
    );
    assert!(mandate.text.contains("重新办理扣款授权"));
}

#[test]
fn receipts_and_warnings_carry_their_facts() {
    let t = builtin();
    let ok = t
        .render_in(
            EmailKind::DebitSucceeded,
            Locale::En,
            &sample(EmailKind::DebitSucceeded, Locale::En),
        )
        .unwrap();
    for fact in [
        "PAY-7F3K2Q",
        "¥9,595.71",
        "Saturday, 28 February 2026",
        "3 of 12",
    ] {
        assert!(ok.text.contains(fact) && ok.html.contains(fact), "{fact}");
    }
    let last = t
        .render_in(
            EmailKind::DebitSucceeded,
            Locale::ZhCn,
            &samples_zh(EmailKind::DebitSucceeded)[1],
        )
        .unwrap();
    assert!(
        last.text.contains("协议AGR-2025-0042已全部还清"),
        "{}",
        last.text
    );

    let warn = t
        .render_in(
            EmailKind::CreditWarning,
            Locale::En,
            &sample(EmailKind::CreditWarning, Locale::En),
        )
        .unwrap();
    assert!(warn.text.contains(
        "Please pay ¥3,198.57 by 23:59 on Monday, 20 April 2026 to avoid this being reported to the credit bureau."
    ), "{}", warn.text);
    assert_eq!(
        warn.subject,
        "Final notice: pay ¥3,198.57 by 20 Apr to avoid a credit report"
    );
    let zh = t
        .render_in(
            EmailKind::CreditWarning,
            Locale::ZhCn,
            &samples_zh(EmailKind::CreditWarning)[0],
        )
        .unwrap();
    assert!(
        zh.text.contains(
            "请于2026年4月20日（星期一）23:59前还款¥3,198.57，以免逾期记录被报送至征信机构。"
        ),
        "{}",
        zh.text
    );

    let overdue = t
        .render_in(
            EmailKind::Overdue,
            Locale::En,
            &sample(EmailKind::Overdue, Locale::En),
        )
        .unwrap();
    assert_eq!(overdue.subject, "Overdue: ¥1,066.19, 1 day past due");
    let overdue = t
        .render_in(
            EmailKind::Overdue,
            Locale::ZhCn,
            &samples_zh(EmailKind::Overdue)[1],
        )
        .unwrap();
    assert_eq!(overdue.subject, "逾期提醒：¥2,132.38已逾期45天");
}

#[test]
fn locale_strings_fall_back_to_english() {
    let t = builtin();
    let ctx = sample(EmailKind::Upcoming, Locale::En);
    for tag in ["zh_CN", "zh-Hans", "zh"] {
        let e = t.render(EmailKind::Upcoming, tag, &ctx).unwrap();
        assert!(e.text.contains("您好"), "{tag}");
    }
    for tag in ["fr-FR", "", "zh-TW"] {
        let e = t.render(EmailKind::Upcoming, tag, &ctx).unwrap();
        assert!(e.text.starts_with("Hi "), "{tag}");
    }
}

#[test]
fn html_escapes_and_text_does_not() {
    let t = builtin();
    let mut ctx = sample(EmailKind::Upcoming, Locale::En);
    ctx.customer_name = "<script>alert('x')</script> & Co".into();
    let e = t.render_in(EmailKind::Upcoming, Locale::En, &ctx).unwrap();
    assert!(!e.html.contains("<script>"));
    assert!(
        e.html
            .contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; &amp; Co"),
        "{}",
        e.html
    );
    assert!(e.text.contains("Hi <script>alert('x')</script> & Co,"));
}

#[test]
fn subject_stays_one_line_whatever_the_data() {
    let t = builtin();
    let mut ctx = sample(EmailKind::Upcoming, Locale::En);
    ctx.due_date_short = "31 Jan\r\nBcc: x@evil.example".into();
    let e = t.render_in(EmailKind::Upcoming, Locale::En, &ctx).unwrap();
    assert!(!e.subject.contains(['\r', '\n']));
    assert!(e.subject.contains("31 Jan Bcc: x@evil.example"));

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "en/upcoming.subject.txt",
        "Hello {{ customer_name }}\n\n",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    ctx.customer_name = "Eve\r\nBcc: x@evil.example".into();
    let e = t.render_in(EmailKind::Upcoming, Locale::En, &ctx).unwrap();
    assert_eq!(e.subject, "Hello Eve Bcc: x@evil.example");
}

#[test]
fn an_override_replaces_only_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "zh-CN/upcoming.txt", "自定义：{{ amount }}\n");
    write(
        dir.path(),
        "en/_footer.txt",
        "-- Custom footer for {{ lender_name }}\n",
    );
    write(dir.path(), "README.md", "not a template, ignored");
    write(dir.path(), "en/.upcoming.txt.swp", "editor junk, ignored");
    let t = Templates::load(Some(dir.path())).unwrap();
    t.check_all().unwrap();
    let zh = t
        .render_in(
            EmailKind::Upcoming,
            Locale::ZhCn,
            &samples_zh(EmailKind::Upcoming)[0],
        )
        .unwrap();
    assert_eq!(zh.text, "自定义：¥1,066.19\n");
    assert!(
        zh.html.contains("您尾号3000的账户余额充足"),
        "the built-in HTML stays"
    );
    let en = t
        .render_in(
            EmailKind::Upcoming,
            Locale::En,
            &sample(EmailKind::Upcoming, Locale::En),
        )
        .unwrap();
    assert!(
        en.text.ends_with("-- Custom footer for Example Finance\n"),
        "{}",
        en.text
    );
    assert!(format!("{t:?}").contains("_footer.txt"));
}

#[test]
fn an_override_may_add_partials_but_not_unknown_templates() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "en/_brand.html", "<b>{{ lender_name }}</b>");
    write(
        dir.path(),
        "en/upcoming.html",
        "{% include \"_brand.html\" %} {{ amount }}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let e = t
        .render_in(
            EmailKind::Upcoming,
            Locale::En,
            &sample(EmailKind::Upcoming, Locale::En),
        )
        .unwrap();
    assert_eq!(e.html, "<b>Example Finance</b> ¥1,066.19");

    let bad = write(dir.path(), "en/upcomming.txt", "typo");
    let err = Templates::load(Some(dir.path())).unwrap_err();
    assert!(matches!(err, TemplateError::UnknownOverride { .. }));
    assert!(
        err.to_string().starts_with(&bad.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_syntax_error_names_the_override_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "zh-CN/upcoming.html",
        "<p>line 1</p>\n<p>line 2</p>\n<p>{% if amount %}unclosed</p>\n",
    );
    let err = Templates::load(Some(dir.path())).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{} line ", path.display())),
        "{msg}"
    );
    assert!(
        matches!(
            err,
            TemplateError::Template {
                line: Some(3..=4),
                ..
            }
        ),
        "{msg}"
    );
}

#[test]
fn a_render_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "en/balance_low.txt",
        "Hi {{ customer_name }},\n\nPlease top up {{ shortfal }}.\n",
    );
    let t = Templates::load(Some(dir.path())).expect("compiles; the typo shows when rendering");
    let err = t.check_all().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{} line 3: ", path.display())),
        "{msg}"
    );
    assert!(msg.contains("undefined"), "{msg}");

    // An error in a built-in-style layout is named by the layout's own file.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "en/_layout.html",
        "<html>\n{{ lender }}\n{% block content %}{% endblock %}</html>",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let msg = t.check_all().unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{} line 2: ", path.display())),
        "{msg}"
    );
}

#[test]
fn printing_an_unset_value_is_an_error_not_the_word_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "en/upcoming.txt", "Short by\n{{ shortfall }}\n");
    let t = Templates::load(Some(dir.path())).unwrap();
    let mut ctx = sample(EmailKind::Upcoming, Locale::En);
    ctx.shortfall = None;
    let msg = t
        .render_in(EmailKind::Upcoming, Locale::En, &ctx)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!("{} line 2: ", path.display())),
        "{msg}"
    );
    assert!(msg.contains("not set"), "{msg}");
}

#[test]
fn built_in_errors_name_the_templates_path() {
    let t = builtin();
    let err = template_error(&t.files, Error::new(ErrorKind::InvalidOperation, "x"));
    assert_eq!(err.to_string(), "template: invalid operation: x");
    assert_eq!(
        t.file_of("zh-CN/upcoming.html"),
        "templates/zh-CN/upcoming.html"
    );
}

#[test]
fn missing_facts_are_refused_before_rendering() {
    let t = builtin();
    let mut ctx = sample(EmailKind::BalanceLow, Locale::En);
    ctx.shortfall = None;
    ctx.amount = String::new();
    let err = t
        .render_in(EmailKind::BalanceLow, Locale::En, &ctx)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a balance_low email needs amount, shortfall in its context"
    );
}

#[test]
fn account_is_masked_to_its_last_four() {
    let mut ctx = TemplateContext::default();
    ctx.set_account("DE89370400440532013000");
    assert_eq!(
        (ctx.account.as_str(), ctx.account_ending.as_str()),
        ("****3000", "3000")
    );
    ctx.set_account("123");
    assert_eq!(
        (ctx.account.as_str(), ctx.account_ending.as_str()),
        ("****", "****")
    );
}

#[test]
fn tidy_text_keeps_paragraphs_and_drops_noise() {
    assert_eq!(tidy_text("\n\nHi,  \n\n\n\nText\n\n"), "Hi,\n\nText\n");
}

#[test]
fn templates_and_mailers_can_be_shared_between_workers() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Templates>();
    shared::<std::sync::Arc<dyn crate::mail::Mailer>>();
}
