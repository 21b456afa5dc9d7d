//! Avro binary reading and writing for changefeed's schemas, as the Python module
//! `changefeed_native`. Used through `schemas/native.py` only, which documents the contract:
//!
//! * `Reader(schema, epoch).read_from(data, start)` returns `(value, end)`: exactly the value
//!   fastavro's `schemaless_reader` returns for the same bytes and writer schema (records as
//!   dicts in field order, enums as str, timestamps as `epoch + timedelta`), and the position
//!   after it. Anything it does not take as certain (a truncated body, invalid UTF-8, a varint
//!   over 64 bits, a boolean byte other than 0 or 1, an index out of range) raises
//!   ValueError, and the caller asks fastavro, which decides. Without an epoch, timestamps
//!   are read as int microseconds (a `timestamp-millis` value times 1000).
//! * `Writer(schema, prefix).encode(record)` returns `prefix + body`, byte for byte what
//!   fastavro's `schemaless_writer` writes, or None for any value it does not handle exactly
//!   (a subclass where a dict, list, str, int, float or bytes is expected, a missing field, a
//!   datetime, a lone surrogate, a number out of range, a union other than null and one
//!   type): the caller's other writers then decide.
//!
//! Schemas are fastavro-parsed schemas (`parse_schema` output): named types defined before
//! they are referenced by name, `int`/`long` and the logical types `timestamp-micros` and
//! `timestamp-millis` on `long`. Other logical types are refused when the schema is compiled.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDelta, PyDict, PyFloat, PyInt, PyList, PyString};

enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    TimestampMicros,
    TimestampMillis,
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Named(usize),
}

enum Named {
    Record(Vec<(Py<PyString>, Node)>),
    Enum(Vec<Py<PyString>>),
    Fixed(usize),
    Pending,
}

fn refused(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

struct Compiler<'py> {
    py: Python<'py>,
    names: Vec<String>,
    named: Vec<Named>,
}

impl<'py> Compiler<'py> {
    fn compile(py: Python<'py>, schema: &Bound<'py, PyAny>) -> PyResult<(Node, Vec<Named>)> {
        let mut compiler = Compiler {
            py,
            names: Vec::new(),
            named: Vec::new(),
        };
        let root = compiler.node(schema)?;
        Ok((root, compiler.named))
    }

    fn node(&mut self, schema: &Bound<'py, PyAny>) -> PyResult<Node> {
        if let Ok(name) = schema.cast::<PyString>() {
            return self.by_name(name.to_str()?);
        }
        if let Ok(list) = schema.cast::<PyList>() {
            let mut branches = Vec::with_capacity(list.len());
            for item in list.iter() {
                branches.push(self.node(&item)?);
            }
            return Ok(Node::Union(branches));
        }
        let dict = schema
            .cast::<PyDict>()
            .map_err(|_| refused("a schema is a str, list or dict"))?;
        let kind = self.text(dict, "type")?;
        if let Some(logical) = dict.get_item("logicalType")? {
            let logical: String = logical.extract()?;
            return match (kind.as_str(), logical.as_str()) {
                ("long", "timestamp-micros") => Ok(Node::TimestampMicros),
                ("long", "timestamp-millis") => Ok(Node::TimestampMillis),
                _ => Err(refused(format!(
                    "logical type {logical} on {kind} is not handled"
                ))),
            };
        }
        match kind.as_str() {
            "record" | "error" | "enum" | "fixed" => {
                let index = self.named.len();
                self.names.push(self.text(dict, "name")?);
                self.named.push(Named::Pending);
                self.named[index] = match kind.as_str() {
                    "enum" => {
                        let symbols: Vec<String> = self.item(dict, "symbols")?.extract()?;
                        Named::Enum(
                            symbols
                                .iter()
                                .map(|s| PyString::intern(self.py, s).unbind())
                                .collect(),
                        )
                    }
                    "fixed" => Named::Fixed(self.item(dict, "size")?.extract()?),
                    _ => {
                        let mut fields = Vec::new();
                        for field in self.item(dict, "fields")?.try_iter()? {
                            let field = field?;
                            let field = field
                                .cast::<PyDict>()
                                .map_err(|_| refused("a field is a dict"))?;
                            let name = self.text(field, "name")?;
                            let node = self.node(&self.item(field, "type")?)?;
                            fields.push((PyString::intern(self.py, &name).unbind(), node));
                        }
                        Named::Record(fields)
                    }
                };
                Ok(Node::Named(index))
            }
            "array" => Ok(Node::Array(Box::new(
                self.node(&self.item(dict, "items")?)?,
            ))),
            "map" => Ok(Node::Map(Box::new(self.node(&self.item(dict, "values")?)?))),
            other => self.by_name(other),
        }
    }

    fn item(&self, dict: &Bound<'py, PyDict>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        dict.get_item(key)?
            .ok_or_else(|| refused(format!("a schema lacks {key:?}")))
    }

    fn text(&self, dict: &Bound<'py, PyDict>, key: &str) -> PyResult<String> {
        self.item(dict, key)?
            .extract()
            .map_err(|_| refused(format!("{key:?} is not a str")))
    }

    fn by_name(&mut self, name: &str) -> PyResult<Node> {
        Ok(match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "int" => Node::Int,
            "long" => Node::Long,
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes,
            "string" => Node::Str,
            _ => match self.names.iter().position(|n| n == name) {
                Some(index) => Node::Named(index),
                None => return Err(refused(format!("unknown type {name}"))),
            },
        })
    }
}

// --- reading -----------------------------------------------------------------------------

const DAY_MICROS: i64 = 86_400_000_000;
/// Nesting (records, arrays, maps, unions) beyond which a recursive schema's value is refused
/// rather than risk the thread's stack; the changefeed schemas nest 4 deep.
const MAX_DEPTH: u32 = 200;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn long(&mut self) -> PyResult<i64> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = *self
                .data
                .get(self.pos)
                .ok_or_else(|| refused("truncated"))?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(refused("a varint over 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err(refused("a varint over 64 bits"));
            }
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| refused("a length out of range"))?;
        let slice = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| refused("truncated"))?;
        self.pos = end;
        Ok(slice)
    }

    #[inline]
    fn sized(&mut self) -> PyResult<&'a [u8]> {
        let n = usize::try_from(self.long()?).map_err(|_| refused("a negative length"))?;
        self.take(n)
    }

    #[inline]
    fn text(&mut self) -> PyResult<&'a str> {
        std::str::from_utf8(self.sized()?).map_err(|_| refused("invalid UTF-8"))
    }

    /// The item count of the next block of an array or map (0 ends it).
    #[inline]
    fn block(&mut self) -> PyResult<usize> {
        let mut n = self.long()?;
        if n < 0 {
            self.long()?; // a negative count is followed by the block's size in bytes
            n = n.checked_neg().ok_or_else(|| refused("a block count"))?;
        }
        let count = n as usize;
        if count > self.data.len() - self.pos {
            // More items than bytes left: only items of no bytes (null) could be that many,
            // and a forged count would build a list without end: left to fastavro.
            return Err(refused("a block count beyond the bytes left"));
        }
        Ok(count)
    }

    /// Calls `item` once for each item of the blocks of an array or map.
    #[inline]
    fn items(&mut self, mut item: impl FnMut(&mut Self) -> PyResult<()>) -> PyResult<()> {
        loop {
            let count = self.block()?;
            if count == 0 {
                return Ok(());
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

#[pyclass(frozen, module = "changefeed_native")]
struct Reader {
    root: Node,
    named: Vec<Named>,
    /// None: timestamps are read as int microseconds (millis scaled) instead of datetimes.
    epoch: Option<Py<PyAny>>,
}

impl Reader {
    fn read<'py>(
        &self,
        py: Python<'py>,
        node: &Node,
        cur: &mut Cursor,
    ) -> PyResult<Bound<'py, PyAny>> {
        cur.depth += 1;
        if cur.depth > MAX_DEPTH {
            return Err(refused("a value nested too deep"));
        }
        let value = self.read_node(py, node, cur)?;
        cur.depth -= 1;
        Ok(value)
    }

    fn read_node<'py>(
        &self,
        py: Python<'py>,
        node: &Node,
        cur: &mut Cursor,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match node {
            Node::Null => py.None().into_bound(py),
            Node::Boolean => match cur.take(1)?[0] {
                0 => PyBool::new(py, false).to_owned().into_any(),
                1 => PyBool::new(py, true).to_owned().into_any(),
                _ => return Err(refused("a boolean byte other than 0 or 1")),
            },
            Node::Int | Node::Long => cur.long()?.into_pyobject(py)?.into_any(),
            Node::Float => {
                let raw: [u8; 4] = cur.take(4)?.try_into().expect("4 bytes");
                PyFloat::new(py, f64::from(f32::from_le_bytes(raw))).into_any()
            }
            Node::Double => {
                let raw: [u8; 8] = cur.take(8)?.try_into().expect("8 bytes");
                PyFloat::new(py, f64::from_le_bytes(raw)).into_any()
            }
            Node::Bytes => PyBytes::new(py, cur.sized()?).into_any(),
            Node::Str => PyString::new(py, cur.text()?).into_any(),
            Node::TimestampMicros => self.timestamp(py, cur.long()?)?,
            Node::TimestampMillis => {
                let millis = cur.long()?;
                self.timestamp(
                    py,
                    millis.checked_mul(1000).ok_or_else(|| refused("range"))?,
                )?
            }
            Node::Array(items) => {
                let list = PyList::empty(py);
                cur.items(|cur| list.append(self.read(py, items, cur)?))?;
                list.into_any()
            }
            Node::Map(values) => {
                let dict = PyDict::new(py);
                cur.items(|cur| {
                    let key = PyString::new(py, cur.text()?);
                    dict.set_item(key, self.read(py, values, cur)?)
                })?;
                dict.into_any()
            }
            Node::Union(branches) => {
                let branch = usize::try_from(cur.long()?)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or_else(|| refused("a union index out of range"))?;
                self.read(py, branch, cur)?
            }
            Node::Named(index) => match &self.named[*index] {
                Named::Record(fields) => {
                    let dict = PyDict::new(py);
                    for (name, field) in fields {
                        dict.set_item(name.bind(py), self.read(py, field, cur)?)?;
                    }
                    dict.into_any()
                }
                Named::Enum(symbols) => {
                    let symbol = usize::try_from(cur.long()?)
                        .ok()
                        .and_then(|i| symbols.get(i))
                        .ok_or_else(|| refused("an enum index out of range"))?;
                    symbol.bind(py).clone().into_any()
                }
                Named::Fixed(size) => PyBytes::new(py, cur.take(*size)?).into_any(),
                Named::Pending => return Err(refused("a type used before its definition")),
            },
        })
    }

    /// `epoch + timedelta(microseconds=micros)`, as fastavro computes it, or `micros`.
    fn timestamp<'py>(&self, py: Python<'py>, micros: i64) -> PyResult<Bound<'py, PyAny>> {
        let Some(epoch) = &self.epoch else {
            return Ok(micros.into_pyobject(py)?.into_any());
        };
        let days = i32::try_from(micros.div_euclid(DAY_MICROS)).map_err(|_| refused("range"))?;
        let rest = micros.rem_euclid(DAY_MICROS);
        let delta = PyDelta::new(
            py,
            days,
            (rest / 1_000_000) as i32,
            (rest % 1_000_000) as i32,
            false,
        )?;
        epoch
            .bind(py)
            .add(delta)
            .map_err(|_| refused("a timestamp out of range"))
    }
}

#[pymethods]
impl Reader {
    #[new]
    #[pyo3(signature = (schema, epoch=None))]
    fn new(py: Python<'_>, schema: &Bound<'_, PyAny>, epoch: Option<Py<PyAny>>) -> PyResult<Self> {
        let (root, named) = Compiler::compile(py, schema)?;
        Ok(Reader { root, named, epoch })
    }

    /// The value whose body starts at `data[start]`, and the position after it.
    fn read_from<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        start: usize,
    ) -> PyResult<(Bound<'py, PyAny>, usize)> {
        let mut cur = Cursor {
            data,
            pos: start,
            depth: 0,
        };
        let value = self.read(py, &self.root, &mut cur)?;
        Ok((value, cur.pos))
    }
}

// --- writing -----------------------------------------------------------------------------

/// A value the writer does not handle exactly: `encode` returns None.
struct Fallback;

type Written = Result<(), Fallback>;

impl From<PyErr> for Fallback {
    fn from(_: PyErr) -> Self {
        Fallback
    }
}

#[inline]
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
fn put_sized(out: &mut Vec<u8>, data: &[u8]) {
    put_long(out, data.len() as i64);
    out.extend_from_slice(data);
}

#[pyclass(frozen, module = "changefeed_native")]
struct Writer {
    root: Node,
    named: Vec<Named>,
    prefix: Vec<u8>,
}

impl Writer {
    fn write(
        &self,
        node: &Node,
        value: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Written {
        if depth > MAX_DEPTH {
            return Err(Fallback);
        }
        let depth = depth + 1;
        match node {
            Node::Null => {
                if !value.is_none() {
                    return Err(Fallback);
                }
            }
            Node::Boolean => {
                let flag = value.cast_exact::<PyBool>().map_err(|_| Fallback)?;
                out.push(u8::from(flag.is_true()));
            }
            Node::Int => {
                let n = exact_int(value)?;
                if i32::try_from(n).is_err() {
                    return Err(Fallback);
                }
                put_long(out, n);
            }
            Node::Long | Node::TimestampMicros | Node::TimestampMillis => {
                // A timestamp given as a datetime falls back: only int micros / millis here.
                put_long(out, exact_int(value)?);
            }
            Node::Float => return Err(Fallback), // rounding to 32 bits is left to the others
            Node::Double => {
                let number = value.cast_exact::<PyFloat>().map_err(|_| Fallback)?;
                out.extend_from_slice(&number.value().to_le_bytes());
            }
            Node::Bytes => {
                let data = value.cast_exact::<PyBytes>().map_err(|_| Fallback)?;
                put_sized(out, data.as_bytes());
            }
            Node::Str => {
                let text = value.cast_exact::<PyString>().map_err(|_| Fallback)?;
                put_sized(out, text.to_str()?.as_bytes()); // a lone surrogate falls back
            }
            Node::Array(items) => {
                let list = value.cast_exact::<PyList>().map_err(|_| Fallback)?;
                if !list.is_empty() {
                    put_long(out, list.len() as i64);
                    for item in list.iter() {
                        self.write(items, &item, out, depth)?;
                    }
                }
                out.push(0);
            }
            Node::Map(values) => {
                let dict = value.cast_exact::<PyDict>().map_err(|_| Fallback)?;
                if !dict.is_empty() {
                    put_long(out, dict.len() as i64);
                    for (key, item) in dict.iter() {
                        let key = key.cast_exact::<PyString>().map_err(|_| Fallback)?;
                        put_sized(out, key.to_str()?.as_bytes());
                        self.write(values, &item, out, depth)?;
                    }
                }
                out.push(0);
            }
            Node::Union(branches) => {
                let null_at = branches.iter().position(|b| matches!(b, Node::Null));
                match (branches.len(), null_at) {
                    (2, Some(at)) => {
                        if value.is_none() {
                            put_long(out, at as i64);
                        } else {
                            let other = &branches[1 - at];
                            if let Node::Named(index) = other {
                                if matches!(self.named[*index], Named::Record(_)) {
                                    let dict =
                                        value.cast_exact::<PyDict>().map_err(|_| Fallback)?;
                                    if dict.contains("-type")? {
                                        return Err(Fallback); // fastavro picks the branch by it
                                    }
                                }
                            }
                            put_long(out, (1 - at) as i64);
                            self.write(other, value, out, depth)?;
                        }
                    }
                    _ => return Err(Fallback),
                }
            }
            Node::Named(index) => match &self.named[*index] {
                Named::Record(fields) => {
                    let dict = value.cast_exact::<PyDict>().map_err(|_| Fallback)?;
                    for (name, field) in fields {
                        // A missing field takes its default in the other writers.
                        let item = dict.get_item(name.bind(value.py()))?.ok_or(Fallback)?;
                        self.write(field, &item, out, depth)?;
                    }
                }
                Named::Enum(symbols) => {
                    let symbol = value.cast_exact::<PyString>().map_err(|_| Fallback)?;
                    let text = symbol.to_str()?;
                    let py = value.py();
                    let at = symbols
                        .iter()
                        .position(|s| s.bind(py).to_str().map(|s| s == text).unwrap_or(false))
                        .ok_or(Fallback)?;
                    put_long(out, at as i64);
                }
                Named::Fixed(size) => {
                    let data = value.cast_exact::<PyBytes>().map_err(|_| Fallback)?;
                    if data.as_bytes().len() != *size {
                        return Err(Fallback);
                    }
                    out.extend_from_slice(data.as_bytes());
                }
                Named::Pending => return Err(Fallback),
            },
        }
        Ok(())
    }
}

#[inline]
fn exact_int(value: &Bound<'_, PyAny>) -> Result<i64, Fallback> {
    // Exactly int: bool, a subclass, is written by fastavro as its own kind of value.
    let number = value.cast_exact::<PyInt>().map_err(|_| Fallback)?;
    number.extract::<i64>().map_err(|_| Fallback)
}

#[pymethods]
impl Writer {
    #[new]
    fn new(py: Python<'_>, schema: &Bound<'_, PyAny>, prefix: Vec<u8>) -> PyResult<Self> {
        let (root, named) = Compiler::compile(py, schema)?;
        Ok(Writer {
            root,
            named,
            prefix,
        })
    }

    /// `prefix + body` of `record`, or None when another writer must decide.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(self.prefix.len() + 512);
        out.extend_from_slice(&self.prefix);
        match self.write(&self.root, record, &mut out, 0) {
            Ok(()) => Some(PyBytes::new(py, &out)),
            Err(Fallback) => None,
        }
    }
}

#[pymodule]
fn changefeed_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Reader>()?;
    m.add_class::<Writer>()?;
    Ok(())
}
