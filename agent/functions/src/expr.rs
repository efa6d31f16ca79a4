//! Expressions for `filter` and `derive`, on the evalexpr crate (not a home-made parser).
//!
//! An expression is compiled once when its workflow loads. Its variables are looked up in
//! a small slot table ([`Vars`]) filled per record with only the names the expression reads,
//! so evaluating costs a tree walk and a few string compares, with no allocation for
//! numbers. evalexpr's built-ins (`math::ln`, `math::exp`, `math::pow`, `if`, ...) are on.

use evalexpr::error::EvalexprResultValue;
use evalexpr::{Context, DefaultNumericTypes, EvalexprError, EvalexprResult, Node};
use skygate_drivers::Value;

pub(crate) type EValue = evalexpr::Value<DefaultNumericTypes>;

/// A compiled expression.
#[derive(Debug)]
pub(crate) struct Expr {
    node: Node<DefaultNumericTypes>,
    vars: Vec<String>,
}

impl Expr {
    /// Compiles `src`; the error says what is wrong with it. Functions that neither
    /// evalexpr nor the agent know are refused here, not on every record later.
    pub fn compile(src: &str) -> Result<Self, String> {
        let node = evalexpr::build_operator_tree::<DefaultNumericTypes>(src)
            .map_err(|e| format!("expression {src:?}: {e}"))?;
        let mut vars: Vec<String> = Vec::new();
        for v in node.iter_read_variable_identifiers() {
            if !vars.iter().any(|x| x == v) {
                vars.push(v.to_string());
            }
        }
        if let Some(w) = node.iter_write_variable_identifiers().next() {
            return Err(format!(
                "expression {src:?} assigns to {w:?}; expressions only read values"
            ));
        }
        // A trial run finds what parsing lets through: unknown functions, operators
        // missing an operand (`value >`). Type errors depend on the values: not here.
        let probe = Vars::with(vars.iter().map(|v| (v.as_str(), EValue::Float(1.0))));
        match node.eval_with_context(&probe) {
            Err(EvalexprError::FunctionIdentifierNotFound(f)) => {
                return Err(format!("expression {src:?} calls unknown function {f:?}"));
            }
            Err(e @ EvalexprError::WrongOperatorArgumentAmount { .. }) => {
                return Err(format!("expression {src:?}: {e}"));
            }
            _ => {}
        }
        Ok(Self { node, vars })
    }

    /// The variable names the expression reads, in first-use order.
    pub fn vars(&self) -> &[String] {
        &self.vars
    }

    pub fn eval(&self, vars: &Vars) -> Result<EValue, String> {
        self.node.eval_with_context(vars).map_err(|e| e.to_string())
    }

    pub fn eval_bool(&self, vars: &Vars) -> Result<bool, String> {
        match self.eval(vars)? {
            EValue::Boolean(b) => Ok(b),
            other => Err(format!("expected true or false, got {other}")),
        }
    }

    /// A number (integers widen to floats).
    pub fn eval_number(&self, vars: &Vars) -> Result<f64, String> {
        match self.eval(vars)? {
            EValue::Float(f) => Ok(f),
            EValue::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, got {other}")),
        }
    }
}

/// Variable slots for one evaluation: names fixed at compile time, values set per record.
#[derive(Debug, Default, Clone)]
pub(crate) struct Vars {
    names: Vec<String>,
    values: Vec<EValue>,
}

impl Vars {
    pub fn for_expr(e: &Expr) -> Self {
        Self::with(e.vars().iter().map(|v| (v.as_str(), EValue::Empty)))
    }

    fn with<'a>(it: impl Iterator<Item = (&'a str, EValue)>) -> Self {
        let (names, values) = it.map(|(n, v)| (n.to_string(), v)).unzip();
        Self { names, values }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn set(&mut self, slot: usize, v: EValue) {
        self.values[slot] = v;
    }
}

/// A reading's value as an expression value: numbers, integers, booleans and text;
/// bytes and blobs are not values an expression can use.
pub(crate) fn to_evalue(v: &Value) -> EValue {
    match v {
        Value::Number(x) => EValue::Float(*x),
        Value::Integer(x) => EValue::Int(*x),
        Value::Bool(x) => EValue::Boolean(*x),
        Value::Text(x) => EValue::String(x.clone()),
        Value::Bytes(_) | Value::Blob(_) => EValue::Empty,
    }
}

impl Context for Vars {
    type NumericTypes = DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&EValue> {
        let i = self.names.iter().position(|n| n == identifier)?;
        match &self.values[i] {
            EValue::Empty => None,
            v => Some(v),
        }
    }

    fn call_function(&self, identifier: &str, _argument: &EValue) -> EvalexprResultValue {
        // Not found here: evalexpr falls back to its built-ins.
        Err(EvalexprError::FunctionIdentifierNotFound(
            identifier.to_string(),
        ))
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, disabled: bool) -> EvalexprResult<()> {
        if disabled {
            Err(EvalexprError::CustomMessage(
                "built-in functions stay enabled".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dew_point_expression_reads_its_channels_and_uses_math_builtins() {
        // Magnus formula; 20 degC at 50 % gives 9.2552 degC.
        let e = Expr::compile(
            "b = 17.62; c = 243.12; g = math::ln(humidity / 100.0) + b * temperature / (c + temperature); c * g / (b - g)",
        );
        assert!(e.is_err(), "assignments are refused");
        let e = Expr::compile(
            "243.12 * (math::ln(humidity / 100.0) + 17.62 * temperature / (243.12 + temperature)) / (17.62 - (math::ln(humidity / 100.0) + 17.62 * temperature / (243.12 + temperature)))",
        )
        .expect("compile");
        assert_eq!(e.vars(), ["humidity", "temperature"]);
        let mut v = Vars::for_expr(&e);
        v.set(0, EValue::Float(50.0));
        v.set(1, EValue::Float(20.0));
        let dp = e.eval_number(&v).expect("eval");
        assert!((dp - 9.25517).abs() < 1e-4, "{dp}");
    }

    #[test]
    fn unknown_functions_and_bad_syntax_are_refused_at_compile_time() {
        let err = Expr::compile("math::lnn(value)").unwrap_err();
        assert!(err.contains("unknown function \"math::lnn\""), "{err}");
        let err = Expr::compile("value > ").unwrap_err();
        assert!(err.starts_with("expression \"value > \""), "{err}");
    }

    #[test]
    fn a_missing_variable_or_a_wrong_type_is_an_evaluation_error() {
        let e = Expr::compile("value > 3").expect("compile");
        let mut v = Vars::for_expr(&e);
        assert!(e.eval_bool(&v).is_err(), "unset variable");
        v.set(0, EValue::Float(4.0));
        assert_eq!(e.eval_bool(&v), Ok(true));
        v.set(0, EValue::Int(2));
        assert_eq!(e.eval_bool(&v), Ok(false));
        let n = Expr::compile("value + 1").expect("compile");
        assert!(n.eval_bool(&v).is_err(), "a number is not a boolean");
    }
}
