//! The canonical conversation: every inbound format converts into these types
//! and every upstream format converts out of them, so N wire formats need 2N
//! converters rather than N². Shapes follow the union of what OpenAI Chat
//! Completions, Anthropic Messages and Gemini `generateContent` can say.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// Results of tool calls (OpenAI `tool` messages, Anthropic `tool_result`
    /// blocks, Gemini `functionResponse` parts).
    Tool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    Url(String),
    Base64 { media_type: String, data: String },
}

impl ImageSource {
    /// A `data:` URL is base64 in disguise; formats that take only one kind convert.
    pub fn from_url(url: &str) -> ImageSource {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((media_type, data)) = rest.split_once(";base64,") {
                return ImageSource::Base64 { media_type: media_type.to_string(), data: data.to_string() };
            }
        }
        ImageSource::Url(url.to_string())
    }

    pub fn to_url(&self) -> String {
        match self {
            ImageSource::Url(u) => u.clone(),
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Image(ImageSource),
    /// `arguments` is JSON text, as OpenAI carries it.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        id: String,
        /// The called function's name (Gemini needs it; filled from the call when missing).
        name: String,
        content: String,
        is_error: bool,
    },
    Thinking {
        text: String,
        signature: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Must call some tool.
    Required,
    /// Must call this tool.
    Named(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    JsonObject,
    JsonSchema { name: String, schema: Value, strict: bool },
}

impl ResponseFormat {
    /// The instruction that stands in for JSON mode where a format has none.
    pub fn instruction(&self) -> String {
        match self {
            ResponseFormat::JsonObject => "Respond with a single JSON object and nothing else.".to_string(),
            ResponseFormat::JsonSchema { schema, .. } => {
                format!("Respond with a single JSON object that matches this JSON Schema, and nothing else: {schema}")
            }
        }
    }
}

/// Extended thinking / reasoning, as asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reasoning {
    /// OpenAI's `reasoning_effort`: minimal, low, medium, high.
    pub effort: Option<String>,
    /// Anthropic `thinking.budget_tokens`, Gemini `thinkingBudget`.
    pub budget_tokens: Option<i64>,
}

impl Reasoning {
    /// A budget for formats that want one, from an effort when only that was given.
    pub fn budget(&self) -> i64 {
        self.budget_tokens.unwrap_or(match self.effort.as_deref() {
            Some("minimal") | Some("low") => 1024,
            Some("high") => 16384,
            _ => 4096,
        })
    }

    /// An effort for formats that want one, from a budget when only that was given.
    pub fn effort(&self) -> String {
        if let Some(e) = &self.effort {
            return e.clone();
        }
        match self.budget_tokens {
            Some(b) if b <= 2048 => "low",
            Some(b) if b >= 12000 => "high",
            _ => "medium",
        }
        .to_string()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    /// System instructions (OpenAI system/developer messages, Anthropic
    /// `system`, Gemini `systemInstruction`), in order.
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning: Option<Reasoning>,
    pub user: Option<String>,
    pub stream: bool,
    /// More than one choice asked for (only OpenAI-wire upstreams can).
    pub n: Option<i64>,
    /// What the inbound request said that the canonical model cannot carry
    /// (server tools, documents…): converting it to another wire is refused.
    pub untranslatable: Vec<String>,
}

impl ChatRequest {
    /// Names tool results after their calls where the inbound format left the
    /// name out (OpenAI), and gives calls without ids (Gemini) stable ones.
    pub fn link_tool_results(&mut self) {
        let mut calls: Vec<(String, String)> = Vec::new();
        let mut counter = 0;
        for m in &mut self.messages {
            for p in &mut m.parts {
                match p {
                    Part::ToolCall { id, name, .. } => {
                        if id.is_empty() {
                            counter += 1;
                            *id = format!("call_{counter}");
                        }
                        calls.push((id.clone(), name.clone()));
                    }
                    Part::ToolResult { id, name, .. } => {
                        if name.is_empty() {
                            if let Some((_, n)) = calls.iter().find(|(i, _)| i == id) {
                                *name = n.clone();
                            }
                        }
                        if id.is_empty() {
                            // Gemini pairs by name and order: take the oldest open call of that name.
                            if let Some(pos) = calls.iter().position(|(_, n)| n == name) {
                                *id = calls.remove(pos).0;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// Token usage. `input` counts every prompt token, cached ones included;
/// `output` counts every generated token, reasoning included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: i64,
    pub output: i64,
    /// Prompt tokens read from the provider's cache.
    pub cached: i64,
    /// Prompt tokens written to the provider's cache (Anthropic).
    pub cache_write: i64,
    pub reasoning: i64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Text, thinking and tool calls, in the order generated.
    pub parts: Vec<Part>,
    pub finish: Option<FinishReason>,
    pub usage: Option<Usage>,
}

impl ChatResponse {
    pub fn text(&self) -> String {
        Message { role: Role::Assistant, parts: self.parts.clone() }.text()
    }
}

/// One step of a streamed answer, whatever the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Start {
        id: String,
        model: String,
    },
    Text(String),
    Thinking(String),
    /// The signature that closes a thinking block (Anthropic).
    ThinkingSignature(String),
    /// A tool call begins; `index` counts calls from 0 within the answer.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolCallArgs {
        index: usize,
        delta: String,
    },
    Finish(FinishReason),
    /// Usage so far; a later one replaces an earlier one.
    Usage(Usage),
    /// The upstream reported an error mid-stream.
    Error {
        message: String,
    },
}

/// The error an upstream answered with, in no particular format.
#[derive(Clone, Debug, PartialEq)]
pub struct WireError {
    pub status: u16,
    pub message: String,
}
