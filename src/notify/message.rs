//! The bodies each kind of target gets for an event: learner-sync's own JSON, Slack's
//! incoming-webhook `{"text"}`, a Teams Workflows message with an Adaptive Card, and
//! the plain-text email.

use serde_json::{json, Value};

use super::event::Event;
use crate::config::WebhookFormat;

/// The JSON body of a webhook.
pub fn webhook_body(format: WebhookFormat, e: &Event) -> Value {
    match format {
        // The documented schema: the `Event` fields, plus `source`.
        WebhookFormat::Json => {
            let mut v = serde_json::to_value(e).unwrap_or_else(|_| json!({}));
            if let Value::Object(m) = &mut v {
                m.insert("source".into(), json!("learner-sync"));
            }
            v
        }
        WebhookFormat::Slack => json!({ "text": format!("*{}*\n{}", e.title, e.text) }),
        WebhookFormat::Teams => {
            let mut body = vec![
                json!({"type": "TextBlock", "text": e.title, "weight": "Bolder", "size": "Medium", "wrap": true}),
                json!({"type": "TextBlock", "text": e.text, "wrap": true}),
            ];
            for c in &e.commands {
                body.push(
                    json!({"type": "TextBlock", "text": c, "fontType": "Monospace", "wrap": true}),
                );
            }
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": body,
                    }
                }]
            })
        }
    }
}

/// Subject and plain-text body of the email.
pub fn email(e: &Event) -> (String, String) {
    let mut body = format!("{}\n\n{}\n", e.title, e.text);
    for c in &e.commands {
        body.push_str(&format!("\nRun: {c}\n"));
    }
    body.push_str(&format!("\nDirectory: {}\nTime: {}\n", e.directory, e.time));
    (e.title.clone(), body)
}
