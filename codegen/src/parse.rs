//! XML → [`Spec`].

use std::collections::HashMap;

use crate::model::{Class, Constant, Domain, Field, Method, Primitive, Spec};

/// Parses one AMQP 0-9-1 XML description.
///
/// Domains are resolved while parsing: a field names either a `domain` (looked up among the file's
/// `<domain>`s) or a primitive `type` directly.
pub fn parse(xml: &str) -> Result<Spec, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("invalid XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "amqp" {
        return Err(format!(
            "root element is <{}>, expected <amqp>",
            root.tag_name().name()
        ));
    }
    let num = |node: roxmltree::Node, attr: &str| -> Result<u32, String> {
        let text = node
            .attribute(attr)
            .ok_or_else(|| format!("<{}> lacks {attr}", node.tag_name().name()))?;
        text.parse::<u32>()
            .map_err(|_| format!("{attr}={text:?} is not a number"))
    };
    let small = |v: u32, what: &str| -> Result<u16, String> {
        u16::try_from(v).map_err(|_| format!("{what} {v} does not fit in 16 bits"))
    };

    let mut spec = Spec {
        major: root
            .attribute("major")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        minor: root
            .attribute("minor")
            .and_then(|v| v.parse().ok())
            .unwrap_or(9),
        revision: root
            .attribute("revision")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        port: root
            .attribute("port")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5672),
        constants: Vec::new(),
        domains: Vec::new(),
        classes: Vec::new(),
    };

    let mut domains: HashMap<String, Primitive> = HashMap::new();
    for node in root.children().filter(|n| n.has_tag_name("domain")) {
        let name = node
            .attribute("name")
            .ok_or("<domain> lacks name")?
            .to_string();
        let ty_name = node.attribute("type").ok_or("<domain> lacks type")?;
        let ty = Primitive::from_xml(ty_name)
            .ok_or_else(|| format!("domain {name} has unknown type {ty_name}"))?;
        domains.insert(name.clone(), ty);
        spec.domains.push(Domain { name, ty });
    }

    let field = |node: roxmltree::Node| -> Result<Field, String> {
        let name = node
            .attribute("name")
            .ok_or("<field> lacks name")?
            .to_string();
        let ty = match (node.attribute("domain"), node.attribute("type")) {
            (Some(domain), _) => *domains
                .get(domain)
                .ok_or_else(|| format!("field {name} uses unknown domain {domain}"))?,
            (None, Some(ty)) => Primitive::from_xml(ty)
                .ok_or_else(|| format!("field {name} has unknown type {ty}"))?,
            (None, None) => return Err(format!("field {name} has neither domain nor type")),
        };
        Ok(Field {
            name,
            domain: node.attribute("domain").map(str::to_string),
            ty,
            reserved: node.attribute("reserved") == Some("1"),
        })
    };

    for node in root.children().filter(|n| n.is_element()) {
        match node.tag_name().name() {
            "constant" => spec.constants.push(Constant {
                name: node
                    .attribute("name")
                    .ok_or("<constant> lacks name")?
                    .to_string(),
                value: num(node, "value")?,
                class: node.attribute("class").map(str::to_string),
            }),
            "class" => {
                let name = node
                    .attribute("name")
                    .ok_or("<class> lacks name")?
                    .to_string();
                let index = small(num(node, "index")?, "class index")?;
                let mut class = Class {
                    name,
                    index,
                    properties: Vec::new(),
                    methods: Vec::new(),
                };
                for child in node.children().filter(|n| n.is_element()) {
                    match child.tag_name().name() {
                        "field" => class.properties.push(field(child)?),
                        "method" => class.methods.push(method(child, &field, &num, &small)?),
                        _ => {}
                    }
                }
                spec.classes.push(class);
            }
            _ => {}
        }
    }
    Ok(spec)
}

fn method(
    node: roxmltree::Node,
    field: &dyn Fn(roxmltree::Node) -> Result<Field, String>,
    num: &dyn Fn(roxmltree::Node, &str) -> Result<u32, String>,
    small: &dyn Fn(u32, &str) -> Result<u16, String>,
) -> Result<Method, String> {
    let name = node
        .attribute("name")
        .ok_or("<method> lacks name")?
        .to_string();
    let mut method = Method {
        index: small(num(node, "index")?, "method index")?,
        synchronous: node.attribute("synchronous") == Some("1"),
        content: node.attribute("content") == Some("1"),
        deprecated: node.attribute("deprecated") == Some("1"),
        responses: Vec::new(),
        client_sends: false,
        server_sends: false,
        fields: Vec::new(),
        name,
    };
    for child in node.children().filter(|n| n.is_element()) {
        match child.tag_name().name() {
            "field" => method.fields.push(field(child)?),
            "response" => method.responses.push(
                child
                    .attribute("name")
                    .ok_or("<response> lacks name")?
                    .to_string(),
            ),
            "chassis" => match child.attribute("name") {
                Some("server") => method.client_sends = true,
                Some("client") => method.server_sends = true,
                other => return Err(format!("method {} has chassis {other:?}", method.name)),
            },
            _ => {}
        }
    }
    Ok(method)
}

impl Spec {
    /// Adds what `extra` declares and `self` lacks: constants, domains, classes and methods, matched by
    /// name. A method present in both keeps `self`'s index and fields; `extra` may only make it
    /// synchronous and add responses. Anything `extra` says that disagrees with `self` (a constant's
    /// value, a domain's type, a class's or method's index, a method's fields, content where the spec
    /// has none, a class's properties) is an error rather than ignored: an addition is meant to add,
    /// and a typo in one must not pass silently. A repeated method may leave its fields and its content
    /// flag (and a repeated class its properties) out.
    pub fn merge(&mut self, extra: Spec) -> Result<(), String> {
        for constant in extra.constants {
            match self.constants.iter().find(|c| c.name == constant.name) {
                Some(c) if *c != constant => {
                    return Err(format!(
                        "the addition's constant {} ({} {:?}) disagrees with the spec's ({} {:?})",
                        constant.name, constant.value, constant.class, c.value, c.class
                    ))
                }
                Some(_) => {}
                None => self.constants.push(constant),
            }
        }
        for domain in extra.domains {
            match self.domains.iter().find(|d| d.name == domain.name) {
                Some(d) if d.ty != domain.ty => {
                    return Err(format!(
                        "the addition's domain {} is a {:?}, the spec's a {:?}",
                        domain.name, domain.ty, d.ty
                    ))
                }
                Some(_) => {}
                None => self.domains.push(domain),
            }
        }
        for class in extra.classes {
            let Some(existing) = self.classes.iter_mut().find(|c| c.name == class.name) else {
                self.classes.push(class);
                continue;
            };
            if existing.index != class.index {
                return Err(format!(
                    "the addition gives class {} index {}, the spec {}",
                    class.name, class.index, existing.index
                ));
            }
            if !class.properties.is_empty() && class.properties != existing.properties {
                return Err(format!(
                    "the addition's properties of class {} disagree with the spec's",
                    class.name
                ));
            }
            for method in class.methods {
                let Some(m) = existing.methods.iter_mut().find(|m| m.name == method.name) else {
                    existing.methods.push(method);
                    continue;
                };
                // Fields are compared by name, wire type and reservedness (a field may be restated
                // with its primitive type instead of the spec's domain); a repeated method that says
                // nothing of content is taken to mean the spec's.
                let wire = |fields: &[Field]| -> Vec<(String, Primitive, bool)> {
                    fields
                        .iter()
                        .map(|f| (f.name.clone(), f.ty, f.reserved))
                        .collect()
                };
                let disagrees = if m.index != method.index {
                    Some(format!("index {} (the spec's: {})", method.index, m.index))
                } else if !method.fields.is_empty() && wire(&method.fields) != wire(&m.fields) {
                    Some("fields".to_owned())
                } else if method.content && !m.content {
                    Some("content flag".to_owned())
                } else {
                    None
                };
                if let Some(what) = disagrees {
                    return Err(format!(
                        "the addition's {}.{} disagrees with the spec's: {what}",
                        class.name, method.name
                    ));
                }
                // The extra file can only make an existing method synchronous and add the replies it
                // lacks (the stripped spec gives basic.recover neither, while RabbitMQ answers it with
                // recover-ok).
                m.synchronous |= method.synchronous;
                for response in method.responses {
                    if !m.responses.contains(&response) {
                        m.responses.push(response);
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks what the emitter relies on: unique ids, responses that exist, at most 15 properties per
    /// flag word handled (more would need continuation words, which no 0-9-1 class has).
    pub fn validate(&self) -> Result<(), String> {
        let mut class_ids = HashMap::new();
        for class in &self.classes {
            if let Some(other) = class_ids.insert(class.index, &class.name) {
                return Err(format!(
                    "classes {other} and {} share index {}",
                    class.name, class.index
                ));
            }
            let mut method_ids = HashMap::new();
            for m in &class.methods {
                if let Some(other) = method_ids.insert(m.index, &m.name) {
                    return Err(format!(
                        "{}.{other} and {}.{} share index {}",
                        class.name, class.name, m.name, m.index
                    ));
                }
                for r in &m.responses {
                    if !class.methods.iter().any(|x| &x.name == r) {
                        return Err(format!(
                            "{}.{} names unknown response {r}",
                            class.name, m.name
                        ));
                    }
                }
            }
            if class.properties.len() > 15 {
                return Err(format!("class {} has more than 15 properties", class.name));
            }
            if class.properties.iter().any(|p| p.ty == Primitive::Bit) {
                return Err(format!(
                    "class {} has a bit property; 0-9-1 has none",
                    class.name
                ));
            }
        }
        Ok(())
    }
}
