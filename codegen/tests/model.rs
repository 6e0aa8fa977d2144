//! The parsed model of the real spec (`spec/` at the workspace root), and the parser's and validator's
//! refusals.

use coney_codegen::{
    emit::{camel, snake},
    load,
    model::{Primitive, Spec},
    parse,
};

fn real_spec() -> Spec {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/");
    let main = std::fs::read_to_string(format!("{dir}amqp0-9-1.stripped.extended.xml")).unwrap();
    let additions = std::fs::read_to_string(format!("{dir}rabbitmq-additions.xml")).unwrap();
    load(&[&main, &additions]).expect("the vendored spec loads")
}

fn method<'a>(spec: &'a Spec, class: &str, name: &str) -> &'a coney_codegen::model::Method {
    spec.classes
        .iter()
        .find(|c| c.name == class)
        .unwrap_or_else(|| panic!("no class {class}"))
        .methods
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no method {class}.{name}"))
}

#[test]
fn real_spec_has_every_class_and_method() {
    let spec = real_spec();
    assert_eq!(
        (spec.major, spec.minor, spec.revision, spec.port),
        (0, 9, 1, 5672)
    );
    let classes: Vec<(&str, u16, usize)> = spec
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.index, c.methods.len()))
        .collect();
    assert_eq!(
        classes,
        [
            ("connection", 10, 14),
            ("channel", 20, 6),
            ("exchange", 40, 8),
            ("queue", 50, 10),
            ("basic", 60, 18),
            ("tx", 90, 6),
            ("confirm", 85, 2),
        ]
    );
    let total: usize = spec.classes.iter().map(|c| c.methods.len()).sum();
    assert_eq!(total, 64);
}

#[test]
fn basic_has_fourteen_properties_in_flag_order() {
    let spec = real_spec();
    let basic = spec.classes.iter().find(|c| c.name == "basic").unwrap();
    let names: Vec<&str> = basic.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "content-type",
            "content-encoding",
            "headers",
            "delivery-mode",
            "priority",
            "correlation-id",
            "reply-to",
            "expiration",
            "message-id",
            "timestamp",
            "type",
            "user-id",
            "app-id",
            "reserved",
        ]
    );
    assert_eq!(basic.properties[2].ty, Primitive::Table);
    assert_eq!(basic.properties[9].ty, Primitive::Timestamp);
    for class in spec.classes.iter().filter(|c| c.name != "basic") {
        assert!(class.properties.is_empty(), "{} has properties", class.name);
    }
}

#[test]
fn constants_and_reply_codes() {
    let spec = real_spec();
    let get = |name: &str| spec.constants.iter().find(|c| c.name == name).unwrap();
    assert_eq!(get("frame-end").value, 206);
    assert_eq!(get("frame-min-size").value, 4096);
    assert_eq!(get("not-found").class.as_deref(), Some("soft-error"));
    assert_eq!(get("command-invalid").value, 503);
    assert_eq!(get("command-invalid").class.as_deref(), Some("hard-error"));
    let soft = spec
        .constants
        .iter()
        .filter(|c| c.class.as_deref() == Some("soft-error"))
        .count();
    let hard = spec
        .constants
        .iter()
        .filter(|c| c.class.as_deref() == Some("hard-error"))
        .count();
    // RabbitMQ's no-route (312), from rabbitmq-additions.xml, is the seventh soft error.
    assert_eq!(get("no-route").value, 312);
    assert_eq!(get("no-route").class.as_deref(), Some("soft-error"));
    assert_eq!((soft, hard), (7, 11));
}

/// The additions can make an existing method synchronous and give it a reply, and nothing else:
/// basic.recover keeps the main file's index and field.
#[test]
fn the_additions_make_basic_recover_synchronous() {
    let spec = real_spec();
    let recover = method(&spec, "basic", "recover");
    assert!(recover.synchronous);
    assert_eq!(recover.responses, ["recover-ok"]);
    assert_eq!(recover.index, 110);
    let fields: Vec<&str> = recover.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fields, ["requeue"]);
}

#[test]
fn method_fields_and_metadata() {
    let spec = real_spec();

    let declare = method(&spec, "queue", "declare");
    let fields: Vec<(&str, Primitive, bool)> = declare
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.ty, f.reserved))
        .collect();
    assert_eq!(
        fields,
        [
            ("reserved-1", Primitive::Short, true),
            ("queue", Primitive::ShortStr, false),
            ("passive", Primitive::Bit, false),
            ("durable", Primitive::Bit, false),
            ("exclusive", Primitive::Bit, false),
            ("auto-delete", Primitive::Bit, false),
            ("no-wait", Primitive::Bit, false),
            ("arguments", Primitive::Table, false),
        ]
    );
    assert!(declare.synchronous && declare.client_sends && !declare.server_sends);
    assert_eq!(declare.responses, ["declare-ok"]);

    let close = method(&spec, "connection", "close");
    assert_eq!(close.fields[0].domain.as_deref(), Some("reply-code"));
    assert_eq!(close.fields[0].ty, Primitive::Short);
    assert!(close.client_sends && close.server_sends);

    let start_ok = method(&spec, "connection", "start-ok");
    let response = start_ok
        .fields
        .iter()
        .find(|f| f.name == "response")
        .unwrap();
    assert_eq!(response.ty, Primitive::LongStr);

    assert!(method(&spec, "basic", "publish").content);
    assert!(method(&spec, "basic", "deliver").content);
    assert!(method(&spec, "basic", "recover-async").deprecated);
    let nack = method(&spec, "basic", "nack");
    assert_eq!(nack.index, 120);
    assert!(nack.client_sends && nack.server_sends);
    assert_eq!(method(&spec, "exchange", "bind").index, 30);

    // From rabbitmq-additions.xml.
    assert_eq!(method(&spec, "connection", "blocked").index, 60);
    assert!(method(&spec, "connection", "blocked").server_sends);
    let update = method(&spec, "connection", "update-secret");
    assert_eq!(update.index, 70);
    assert!(update.synchronous && update.client_sends);
    assert_eq!(update.responses, ["update-secret-ok"]);
}

/// No 0-9-1 method needs more than proptest's 12-element tuples, and the bit runs fit one octet each.
#[test]
fn methods_have_few_fields_and_short_bit_runs() {
    let spec = real_spec();
    for class in &spec.classes {
        for m in &class.methods {
            assert!(m.fields.len() <= 9, "{}.{}", class.name, m.name);
            let mut run = 0;
            for f in &m.fields {
                run = if f.ty == Primitive::Bit { run + 1 } else { 0 };
                assert!(run <= 8, "{}.{}", class.name, m.name);
            }
        }
    }
}

#[test]
fn merge_adds_only_what_is_missing() {
    let base = parse(
        r#"<amqp><domain name="short" type="short"/>
           <class name="c" index="1"><method name="m" index="1"><field name="a" domain="short"/></method></class>
           </amqp>"#,
    )
    .unwrap();
    let extra = parse(
        r#"<amqp><domain name="long" type="long"/>
           <class name="c" index="1">
             <method name="m" index="1"/>
             <method name="n" index="2"/>
           </class>
           <class name="d" index="2"/></amqp>"#,
    )
    .unwrap();
    let mut merged = base.clone();
    merged.merge(extra).unwrap();
    assert_eq!(merged.classes.len(), 2);
    let c = &merged.classes[0];
    assert_eq!(c.methods.len(), 2);
    assert_eq!(
        c.methods[0], base.classes[0].methods[0],
        "base definition wins"
    );
    assert_eq!(c.methods[1].name, "n");
    assert_eq!(merged.domains.len(), 2);
}

/// An addition that disagrees with the spec is an error, not silently ignored.
#[test]
fn merge_refuses_an_addition_that_disagrees() {
    let base = r#"<amqp><constant name="frame-min-size" value="4096"/>
        <domain name="short" type="short"/>
        <class name="c" index="1"><method name="m" index="1"><field name="a" domain="short"/></method></class>
        </amqp>"#;
    for (extra, what) in [
        (
            r#"<amqp><constant name="frame-min-size" value="1"/></amqp>"#,
            "frame-min-size",
        ),
        (
            r#"<amqp><domain name="short" type="long"/></amqp>"#,
            "domain short",
        ),
        (r#"<amqp><class name="c" index="2"/></amqp>"#, "index 2"),
        (
            r#"<amqp><class name="c" index="1"><method name="m" index="3"/></class></amqp>"#,
            "index 3",
        ),
        (
            r#"<amqp><domain name="long" type="long"/><class name="c" index="1"><method name="m" index="1"><field name="b" domain="long"/></method></class></amqp>"#,
            "fields",
        ),
        (
            r#"<amqp><class name="c" index="1"><method name="m" index="1" content="1"/></class></amqp>"#,
            "content",
        ),
    ] {
        let mut spec = parse(base).unwrap();
        let err = spec.merge(parse(extra).unwrap()).unwrap_err();
        assert!(err.contains(what), "{extra}: {err}");
    }
    // Repeating what the spec says, or adding a response, is fine.
    let mut spec = parse(base).unwrap();
    spec.merge(
        parse(r#"<amqp><constant name="frame-min-size" value="4096"/><domain name="short" type="short"/><class name="c" index="1"><method name="m" index="1" synchronous="1"><field name="a" domain="short"/></method></class></amqp>"#)
            .unwrap(),
    )
    .unwrap();
    assert!(spec.classes[0].methods[0].synchronous);
}

#[test]
fn refusals() {
    let err = |xml: &str| load(&[xml]).unwrap_err();
    assert!(err("<nope/>").contains("expected <amqp>"));
    assert!(err("<amqp").contains("invalid XML"));
    assert!(err(r#"<amqp><domain name="x" type="float"/></amqp>"#).contains("unknown type"));
    assert!(err(
        r#"<amqp><class name="c" index="1"><method name="m" index="1">
           <field name="f" domain="missing"/></method></class></amqp>"#
    )
    .contains("unknown domain"));
    assert!(err(
        r#"<amqp><class name="c" index="1"><method name="m" index="1"/>
           <method name="n" index="1"/></class></amqp>"#
    )
    .contains("share index"));
    assert!(
        err(r#"<amqp><class name="c" index="1"/><class name="d" index="1"/></amqp>"#)
            .contains("share index")
    );
    assert!(err(
        r#"<amqp><class name="c" index="1"><method name="m" index="1">
           <response name="nowhere"/></method></class></amqp>"#
    )
    .contains("unknown response"));
    assert!(err(r#"<amqp><class name="c" index="70000"/></amqp>"#).contains("16 bits"));
    assert!(
        err(r#"<amqp><class name="c" index="1"><field name="p" type="bit"/></class></amqp>"#)
            .contains("bit property")
    );
    let sixteen: String = (0..16)
        .map(|i| format!(r#"<field name="p{i}" type="octet"/>"#))
        .collect();
    assert!(err(&format!(
        r#"<amqp><class name="c" index="1">{sixteen}</class></amqp>"#
    ))
    .contains("more than 15"));
    assert_eq!(load(&[]).unwrap_err(), "no XML given");
}

#[test]
fn rust_names() {
    assert_eq!(camel("declare-ok"), "DeclareOk");
    assert_eq!(camel("update-secret-ok"), "UpdateSecretOk");
    assert_eq!(snake("auto-delete"), "auto_delete");
    assert_eq!(snake("type"), "kind");
}
