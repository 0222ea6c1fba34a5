//! `execute_code`: a restricted expression evaluator, never a shell.
//!
//! evalexpr runs with an immutable, empty context: builtin functions are off
//! (so no regex, no `random`), there are no variables, and assignments fail.
//! Without variables an expression has no loops and cannot grow a value
//! beyond the size of its own text, so the work is bounded by the length
//! limit. The parser and evaluator recurse once per nesting level, so they
//! run on a dedicated thread whose stack fits the deepest 4096-character
//! expression; on a default 2 MiB thread, `------…1` aborts the process.

use std::sync::Arc;
use std::time::Duration;

use evalexpr::{Context, DefaultNumericTypes, EmptyContext, EvalexprError};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::ToolOutput;
use crate::error::ToolError;

pub(crate) const MAX_EXPRESSION_CHARS: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(2);
const STACK_BYTES: usize = 32 * 1024 * 1024;
/// Evaluations in flight at once. A timed-out evaluation keeps its slot until
/// its thread really ends, so threads cannot pile up.
const CONCURRENCY: usize = 4;

type Outcome = Result<evalexpr::Value<DefaultNumericTypes>, EvalexprError<DefaultNumericTypes>>;

#[derive(Debug, Clone)]
pub(crate) struct Evaluator {
    slots: Arc<Semaphore>,
}

impl Evaluator {
    pub(crate) fn new() -> Self {
        Evaluator {
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
        }
    }

    pub(crate) async fn evaluate(&self, expression: &str) -> Result<ToolOutput, ToolError> {
        if expression.trim().is_empty() {
            return Err(ToolError::invalid("'expression' must not be empty"));
        }
        if expression.chars().count() > MAX_EXPRESSION_CHARS {
            return Err(ToolError::invalid(format!(
                "'expression' is longer than {MAX_EXPRESSION_CHARS} characters"
            )));
        }
        let busy = || ToolError::failed("the evaluator is busy; try again");
        let slot = tokio::time::timeout(TIMEOUT, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;

        let (done, outcome) = tokio::sync::oneshot::channel::<Outcome>();
        let source = expression.to_string();
        std::thread::Builder::new()
            .name("gatehouse-eval".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let _slot = slot;
                let _ = done.send(evaluate_now(&source));
            })
            .map_err(|_| ToolError::failed("could not start the evaluator"))?;

        let value = match tokio::time::timeout(TIMEOUT, outcome).await {
            Ok(Ok(result)) => result.map_err(evaluation_error)?,
            Ok(Err(_)) => return Err(ToolError::failed("the evaluator stopped unexpectedly")),
            Err(_) => {
                return Err(ToolError::failed(format!(
                    "evaluation took longer than {} s",
                    TIMEOUT.as_secs()
                )));
            }
        };
        let json = to_json(&value);
        let text = match &value {
            evalexpr::Value::String(s) => s.clone(),
            _ => json.to_string(),
        };
        Ok(ToolOutput {
            text,
            structured: Some(json!({ "value": json })),
        })
    }
}

fn evaluate_now(source: &str) -> Outcome {
    let context = EmptyContext::<DefaultNumericTypes>::default();
    // EmptyContext cannot enable builtins; this documents the requirement
    // and would catch a swap to a context type that can.
    if !context.are_builtin_functions_disabled() {
        return Err(EvalexprError::CustomMessage("builtins enabled".into()));
    }
    evalexpr::eval_with_context(source, &context)
}

fn evaluation_error(err: EvalexprError<DefaultNumericTypes>) -> ToolError {
    match err {
        EvalexprError::FunctionIdentifierNotFound(name) => ToolError::refused(format!(
            "'{name}' is a function call; this evaluator offers no functions"
        )),
        EvalexprError::VariableIdentifierNotFound(name) => ToolError::refused(format!(
            "'{name}' is a variable; this evaluator offers no variables"
        )),
        EvalexprError::ContextNotMutable => {
            ToolError::refused("assignments are not available in this evaluator")
        }
        other => ToolError::failed(format!("evaluation failed: {other}")),
    }
}

fn to_json(value: &evalexpr::Value<DefaultNumericTypes>) -> Value {
    match value {
        evalexpr::Value::String(s) => Value::String(s.clone()),
        evalexpr::Value::Int(i) => json!(i),
        evalexpr::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        evalexpr::Value::Boolean(b) => Value::Bool(*b),
        evalexpr::Value::Tuple(items) => Value::Array(items.iter().map(to_json).collect()),
        evalexpr::Value::Empty => Value::Null,
    }
}

#[cfg(test)]
#[path = "expression_tests.rs"]
mod tests;
