//! Token counting endpoints: Anthropic `/v1/messages/count_tokens` and Gemini
//! `:countTokens`. Counted here with the same tokenizer that estimates
//! reservations (no upstream call, no charge), so the figure is an estimate
//! for non-OpenAI models.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use oblivious_core::wire::{anthropic, gemini, openai, Inbound};
use oblivious_core::{authz, count, ApiError};
use oblivious_ports::{Ids, Platform};
use serde_json::{json, Value};

use crate::inbound::{self, GeminiCall};
use crate::respond::{error_response_in, json_response, read_body};
use crate::Relay;

pub(crate) async fn count<P: Platform>(
    relay: Arc<Relay<P>>,
    inbound: Inbound,
    call: Option<GeminiCall>,
    req: Request,
) -> Response {
    let request_id = relay.ports.ids.request_id();
    let (parts, body) = req.into_parts();
    let result = async {
        let principal = relay.authenticate(&parts).await?;
        let settings = relay.settings();
        let raw = read_body(&parts, body, settings.max_body_bytes).await?;
        let value = inbound::parse_json(&raw, &settings)?;
        let Value::Object(mut body) = value else {
            return Err(ApiError::invalid("invalid_json", "The request body must be a JSON object."));
        };
        let canon = match (inbound, &call) {
            (Inbound::Gemini, Some(call)) => {
                // `{contents}` or `{generateContentRequest: {contents, …}}`.
                if let Some(Value::Object(inner)) = body.remove("generateContentRequest") {
                    body = inner;
                }
                gemini::parse_request(&body, &call.model, false)?
            }
            _ => {
                // count_tokens takes a messages request without max_tokens.
                body.entry("max_tokens").or_insert(json!(1));
                anthropic::parse_request(&body)?
            }
        };
        authz::check_model(&principal.token, &canon.model)?;
        if relay.snapshot().candidates(&principal.user.group, &canon.model).is_empty() {
            return Err(ApiError::not_found(
                "model_not_found",
                format!("The model `{}` does not exist or you do not have access to it.", canon.model),
            )
            .with_param("model"));
        }
        let body = inbound::object(openai::build_request(&canon, &canon.model, false));
        Ok(count::count_chat_prompt(&canon.model, &body))
    }
    .await;
    match result {
        Ok(n) => {
            let body = match inbound {
                Inbound::Gemini => json!({ "totalTokens": n }),
                _ => json!({ "input_tokens": n }),
            };
            json_response(200, body.to_string().into(), &request_id)
        }
        Err(e) => error_response_in(inbound, &e, &request_id),
    }
}
