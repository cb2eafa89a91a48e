//! Kernel BTF: struct member offsets and tracepoint prototypes.
//!
//! Rust eBPF has no CO-RE field relocations, so the loader reads the offsets the programs
//! need from `/sys/kernel/btf/vmlinux` and hands them over in the `.rodata` global
//! `AGENTD_KERNEL_OFFSETS` (`agentd_common::KernelOffsets`). aya's own BTF type keeps its
//! type table private, hence this small read-only parser of the BTF format
//! (<https://docs.kernel.org/bpf/btf.html>).

use std::{fmt, path::Path};

use agentd_common::KernelOffsets;

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
/// Guard against reference cycles in malformed BTF when following type chains.
const MAX_CHAIN: usize = 64;

// BTF_KIND_* (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors reading kernel BTF. Messages name the struct, member or tracepoint concerned.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("read {path}: {error}")]
    Read {
        /// File that was read.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The data is not valid BTF.
    #[error("malformed btf: {0}")]
    Malformed(String),
    /// No struct of that name.
    #[error("btf has no struct {0}")]
    NoStruct(String),
    /// The struct has no such member (also searched through anonymous members).
    #[error("btf struct {strukt} has no member {member}")]
    NoMember {
        /// Struct searched.
        strukt: String,
        /// Member looked for.
        member: String,
    },
    /// The member exists but is not what the eBPF programs read.
    #[error("btf member {strukt}.{member}: {problem}")]
    UnexpectedMember {
        /// Struct of the member.
        strukt: String,
        /// The member.
        member: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No `btf_trace_<name>` typedef: the tracepoint does not exist (or has no BTF).
    #[error("btf has no tracepoint prototype btf_trace_{0}")]
    NoTracepoint(String),
    /// The tracepoint exists with arguments the programs were not written for.
    #[error("tracepoint {tracepoint} has prototype ({found}), expected {expected}")]
    UnexpectedPrototype {
        /// Tracepoint name.
        tracepoint: String,
        /// Prototype found, as C types.
        found: String,
        /// What agentd expects.
        expected: &'static str,
    },
}

/// One BTF type record: the common 12-byte header and where its kind-specific data sits.
#[derive(Clone, Copy)]
struct TypeRec {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// Byte offset of the kind-specific data in the type section.
    extra: usize,
}

impl TypeRec {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// A located struct member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size of the member's type in bytes.
    pub size: u32,
}

/// A parsed, read-only view of a BTF blob.
pub struct KernelBtf<'a> {
    types_sec: &'a [u8],
    strings: &'a [u8],
    /// Index 0 is `void`; real types start at id 1.
    types: Vec<TypeRec>,
}

/// Reads the running kernel's BTF.
pub fn read_vmlinux() -> Result<Vec<u8>, BtfError> {
    read_file(Path::new(VMLINUX_BTF))
}

fn read_file(path: &Path) -> Result<Vec<u8>, BtfError> {
    std::fs::read(path).map_err(|error| BtfError::Read {
        path: path.display().to_string(),
        error,
    })
}

fn malformed(what: impl fmt::Display) -> BtfError {
    BtfError::Malformed(what.to_string())
}

fn u32_at(data: &[u8], offset: usize) -> Result<u32, BtfError> {
    let bytes = offset
        .checked_add(4)
        .and_then(|end| data.get(offset..end))
        .ok_or_else(|| malformed(format!("read past end at byte {offset}")))?;
    let mut out = [0u8; 4];
    out.copy_from_slice(bytes);
    Ok(u32::from_le_bytes(out))
}

fn section<'a>(data: &'a [u8], start: usize, len: usize, what: &str) -> Result<&'a [u8], BtfError> {
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .ok_or_else(|| malformed(format!("{what} section out of bounds")))
}

impl<'a> KernelBtf<'a> {
    /// Parses a little-endian BTF blob (what x86-64 and arm64 kernels expose).
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| malformed("shorter than its header"))?;
        if magic != BTF_MAGIC {
            return Err(malformed(format!(
                "bad magic {magic:#06x} (big-endian btf is not supported)"
            )));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(malformed(format!("header length {hdr_len}")));
        }
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_sec = section(data, hdr_len.saturating_add(type_off), type_len, "type")?;
        let strings = section(data, hdr_len.saturating_add(str_off), str_len, "string")?;

        let mut types = vec![TypeRec {
            name_off: 0,
            info: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut pos = 0usize;
        while pos < types_sec.len() {
            let rec = TypeRec {
                name_off: u32_at(types_sec, pos)?,
                info: u32_at(types_sec, pos + 4)?,
                size_or_type: u32_at(types_sec, pos + 8)?,
                extra: pos + TYPE_LEN,
            };
            let vlen = rec.vlen();
            let extra_len = match rec.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                other => {
                    return Err(malformed(format!(
                        "unknown kind {other} for type id {}",
                        types.len()
                    )))
                }
            };
            pos = rec.extra + extra_len;
            if pos > types_sec.len() {
                return Err(malformed(format!(
                    "type id {} runs past the end",
                    types.len()
                )));
            }
            types.push(rec);
        }
        Ok(Self {
            types_sec,
            strings,
            types,
        })
    }

    fn name_bytes(&self, name_off: u32) -> Result<&'a [u8], BtfError> {
        let start = name_off as usize;
        let rest = self
            .strings
            .get(start..)
            .ok_or_else(|| malformed(format!("string offset {start} out of bounds")))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(format!("string at {start} is not terminated")))?;
        Ok(&rest[..end])
    }

    fn name(&self, name_off: u32) -> Result<&'a str, BtfError> {
        std::str::from_utf8(self.name_bytes(name_off)?)
            .map_err(|_| malformed(format!("string at {name_off} is not UTF-8")))
    }

    fn get(&self, id: u32) -> Result<&TypeRec, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| malformed(format!("type id {id} out of range")))
    }

    /// First type id with this kind and name.
    fn find(&self, kind: u32, name: &str) -> Result<Option<u32>, BtfError> {
        for (id, rec) in self.types.iter().enumerate().skip(1) {
            if rec.kind() == kind && self.name_bytes(rec.name_off)? == name.as_bytes() {
                let id = u32::try_from(id).map_err(|_| malformed("too many types"))?;
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Follows typedef / const / volatile / restrict / type-tag chains.
    fn strip(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_CHAIN {
            let rec = self.get(id)?;
            match rec.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = rec.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(malformed(format!("type chain from id {id} too long")))
    }

    /// Size in bytes of a type (pointers are 8 bytes: 64-bit kernels only).
    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let id = self.strip(id)?;
        let rec = self.get(id)?;
        match rec.kind() {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Ok(rec.size_or_type)
            }
            KIND_PTR => Ok(8),
            KIND_ARRAY => {
                let elem = u32_at(self.types_sec, rec.extra)?;
                let nelems = u32_at(self.types_sec, rec.extra + 8)?;
                self.size_of(elem)?
                    .checked_mul(nelems)
                    .ok_or_else(|| malformed(format!("array type {id} size overflows")))
            }
            other => Err(malformed(format!(
                "type id {id} of kind {other} has no size"
            ))),
        }
    }

    /// The offset of `strukt.member`, checked to be `size` bytes when one is given.
    pub fn member_offset(
        &self,
        strukt: &str,
        member: &str,
        size: Option<u32>,
    ) -> Result<u32, BtfError> {
        let found = self.member(strukt, member)?;
        if let Some(size) = size {
            if found.size != size {
                return Err(BtfError::UnexpectedMember {
                    strukt: strukt.to_owned(),
                    member: member.to_owned(),
                    problem: format!("is {} bytes, expected {size}", found.size),
                });
            }
        }
        Ok(found.offset)
    }

    /// Offset and size of `strukt.member`, looking through anonymous struct/union members
    /// (e.g. `file.f_path`, which sits in an anonymous union on 6.18).
    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, BtfError> {
        let id = self
            .find(KIND_STRUCT, strukt)?
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find_member(id, member, 0, 0)?
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    fn find_member(
        &self,
        id: u32,
        member: &str,
        base_bits: u32,
        depth: usize,
    ) -> Result<Option<Member>, BtfError> {
        if depth > MAX_CHAIN {
            return Err(malformed(format!(
                "anonymous members nested too deep in type {id}"
            )));
        }
        let rec = *self.get(id)?;
        if !matches!(rec.kind(), KIND_STRUCT | KIND_UNION) {
            return Ok(None);
        }
        for i in 0..rec.vlen() {
            let at = rec.extra + i * 12;
            let name_off = u32_at(self.types_sec, at)?;
            let ty = u32_at(self.types_sec, at + 4)?;
            let raw_offset = u32_at(self.types_sec, at + 8)?;
            // With kind_flag, the top 8 bits are the bitfield size.
            let (bit_offset, bitfield_size) = if rec.kind_flag() {
                (raw_offset & 0x00ff_ffff, raw_offset >> 24)
            } else {
                (raw_offset, 0)
            };
            let bits = base_bits
                .checked_add(bit_offset)
                .ok_or_else(|| malformed(format!("member offset overflows in type {id}")))?;
            let name = self.name(name_off)?;
            if name == member {
                if bitfield_size != 0 || !bits.is_multiple_of(8) {
                    return Err(BtfError::UnexpectedMember {
                        strukt: self.name(rec.name_off)?.to_owned(),
                        member: member.to_owned(),
                        problem: "is a bitfield".to_owned(),
                    });
                }
                return Ok(Some(Member {
                    offset: bits / 8,
                    size: self.size_of(ty)?,
                }));
            }
            if name.is_empty() {
                let inner = self.strip(ty)?;
                if let Some(found) = self.find_member(inner, member, bits, depth + 1)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// C rendering of a type, for prototypes and messages (`struct task_struct *`).
    pub fn type_name(&self, id: u32) -> Result<String, BtfError> {
        self.render(id, 0)
    }

    fn render(&self, id: u32, depth: usize) -> Result<String, BtfError> {
        if depth > MAX_CHAIN {
            return Err(malformed(format!("type chain from id {id} too long")));
        }
        if id == 0 {
            return Ok("void".to_owned());
        }
        let rec = *self.get(id)?;
        let name = self.name(rec.name_off)?;
        let named = |prefix: &str| {
            if name.is_empty() {
                format!("{prefix} (anon)")
            } else {
                format!("{prefix} {name}")
            }
        };
        Ok(match rec.kind() {
            KIND_INT | KIND_TYPEDEF | KIND_FLOAT => name.to_owned(),
            KIND_STRUCT => named("struct"),
            KIND_UNION => named("union"),
            KIND_ENUM | KIND_ENUM64 => named("enum"),
            KIND_FWD if rec.kind_flag() => named("union"),
            KIND_FWD => named("struct"),
            KIND_PTR => format!("{} *", self.render(rec.size_or_type, depth + 1)?),
            KIND_CONST => format!("const {}", self.render(rec.size_or_type, depth + 1)?),
            KIND_VOLATILE => format!("volatile {}", self.render(rec.size_or_type, depth + 1)?),
            KIND_RESTRICT | KIND_TYPE_TAG => self.render(rec.size_or_type, depth + 1)?,
            KIND_ARRAY => {
                let elem = u32_at(self.types_sec, rec.extra)?;
                let nelems = u32_at(self.types_sec, rec.extra + 8)?;
                format!("{}[{nelems}]", self.render(elem, depth + 1)?)
            }
            KIND_FUNC_PROTO => "function".to_owned(),
            other => format!("kind {other}"),
        })
    }

    /// Parameter types of kernel function `name`, or `None` if BTF has no such function.
    pub fn func_args(&self, name: &str) -> Result<Option<Vec<String>>, BtfError> {
        let Some(id) = self.find(KIND_FUNC, name)? else {
            return Ok(None);
        };
        let proto = *self.get(self.get(id)?.size_or_type)?;
        if proto.kind() != KIND_FUNC_PROTO {
            return Err(malformed(format!("{name} has no prototype")));
        }
        let mut args = Vec::with_capacity(proto.vlen());
        for i in 0..proto.vlen() {
            let ty = u32_at(self.types_sec, proto.extra + i * 8 + 4)?;
            args.push(self.type_name(ty)?);
        }
        Ok(Some(args))
    }

    /// Argument types of tracepoint `name`, from its `btf_trace_<name>` typedef (a pointer
    /// to `void (void *__data, args...)`), without the leading `void *__data` that BTF
    /// programs do not see.
    pub fn tracepoint_args(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let typedef = format!("btf_trace_{name}");
        let id = self
            .find(KIND_TYPEDEF, &typedef)?
            .ok_or_else(|| BtfError::NoTracepoint(name.to_owned()))?;
        let ptr = self.get(self.get(id)?.size_or_type)?;
        let proto_id = if ptr.kind() == KIND_PTR {
            ptr.size_or_type
        } else {
            return Err(malformed(format!("{typedef} is not a function pointer")));
        };
        let proto = *self.get(proto_id)?;
        if proto.kind() != KIND_FUNC_PROTO {
            return Err(malformed(format!(
                "{typedef} does not point to a prototype"
            )));
        }
        let mut args = Vec::with_capacity(proto.vlen());
        for i in 0..proto.vlen() {
            let ty = u32_at(self.types_sec, proto.extra + i * 8 + 4)?;
            args.push(self.type_name(ty)?);
        }
        if args.first().map(String::as_str) != Some("void *") {
            return Err(malformed(format!(
                "{typedef} does not start with void *__data: ({})",
                args.join(", ")
            )));
        }
        args.remove(0);
        Ok(args)
    }
}

/// Tracepoint prototypes the programs were written against.
pub const EXEC_PROTOTYPE: &str = "(struct task_struct *, pid_t, struct linux_binprm *)";
/// Accepted prototypes of `sched_process_exit`.
pub const EXIT_PROTOTYPE: &str =
    "(struct task_struct *, bool) on 6.16+, or (struct task_struct *) before";

/// Reads every offset the programs need, checking member sizes and tracepoint prototypes
/// so that a kernel with a different layout fails here, by name, instead of producing
/// garbage events.
pub fn kernel_offsets(btf: &KernelBtf<'_>) -> Result<KernelOffsets, BtfError> {
    const PTR: u32 = 8;
    const INT: u32 = 4;
    let field =
        |strukt: &str, member: &str, size: u32| btf.member_offset(strukt, member, Some(size));

    // `outer.member.inner`, or 0 when the kernel has no such member (no CONFIG_SECCOMP):
    // offset 0 of task_struct is thread_info.flags, never either field, so the programs
    // read 0 as "absent".
    let nested = |outer: &str, member: &str, inner_struct: &str, inner: &str, size: u32| {
        let base = btf.member_offset(outer, member, None).ok();
        let off = btf.member_offset(inner_struct, inner, Some(size)).ok();
        base.zip(off)
            .and_then(|(b, o)| b.checked_add(o))
            .unwrap_or(0)
    };
    let exec_args = btf.tracepoint_args(agentd_common::names::TP_SCHED_PROCESS_EXEC)?;
    let exec_ok = exec_args.len() == 3
        && exec_args[0] == "struct task_struct *"
        && exec_args[2] == "struct linux_binprm *";
    if !exec_ok {
        return Err(BtfError::UnexpectedPrototype {
            tracepoint: agentd_common::names::TP_SCHED_PROCESS_EXEC.to_owned(),
            found: exec_args.join(", "),
            expected: EXEC_PROTOTYPE,
        });
    }
    let exit_args = btf.tracepoint_args(agentd_common::names::TP_SCHED_PROCESS_EXIT)?;
    let exit_has_group_dead = match exit_args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["struct task_struct *"] => 0,
        ["struct task_struct *", "bool"] => 1,
        _ => {
            return Err(BtfError::UnexpectedPrototype {
                tracepoint: agentd_common::names::TP_SCHED_PROCESS_EXIT.to_owned(),
                found: exit_args.join(", "),
                expected: EXIT_PROTOTYPE,
            })
        }
    };

    let offsets = KernelOffsets {
        task_real_parent: field("task_struct", "real_parent", PTR)?,
        task_tgid: field("task_struct", "tgid", INT)?,
        task_exit_code: field("task_struct", "exit_code", INT)?,
        task_group_leader: field("task_struct", "group_leader", PTR)?,
        task_signal: field("task_struct", "signal", PTR)?,
        signal_flags: field("signal_struct", "flags", INT)?,
        signal_group_exit_code: field("signal_struct", "group_exit_code", INT)?,
        binprm_filename: field("linux_binprm", "filename", PTR)?,
        exit_has_group_dead,
        task_seccomp_mode: nested("task_struct", "seccomp", "seccomp", "mode", INT),
        task_thread_status: nested("task_struct", "thread_info", "thread_info", "status", INT),
        valid: 1,
    };
    Ok(offsets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, info, size_or_type, extra u32s) records.
    struct Builder {
        strings: Vec<u8>,
        types: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                strings: vec![0],
                types: Vec::new(),
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn ty(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            kflag: bool,
            st: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.s(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for v in [name, info, st].iter().chain(extra) {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.ty("int", KIND_INT, 0, false, 4, &[32]); // 1
        let char_ = b.ty("char", KIND_INT, 0, false, 1, &[8]); // 2
        let cptr = b.ty("", KIND_PTR, 0, false, char_, &[]); // 3
                                                             // union { int a; int b; } at offset 64 bytes inside `outer`.
        let a = b.s("a");
        let bb = b.s("b");
        let un = b.ty("", KIND_UNION, 2, false, 4, &[a, int, 0, bb, int, 0]); // 4
        let name = b.s("name");
        let x = b.s("x");
        let bits = b.s("bits");
        // struct outer { char *name @0; <anon union> @512 bits; int x @544 bits; int bits:3 @576 }
        b.ty(
            "outer",
            KIND_STRUCT,
            4,
            true,
            80,
            &[
                name,
                cptr,
                0,
                0,
                un,
                512,
                x,
                int,
                544,
                bits,
                int,
                (3 << 24) | 576,
            ],
        ); // 5
           // typedef void (*btf_trace_tp)(void *, struct outer *, int);
        let optr = b.ty("", KIND_PTR, 0, false, 5, &[]); // 6
        let vptr = b.ty("", KIND_PTR, 0, false, 0, &[]); // 7
        let proto = b.ty(
            "",
            KIND_FUNC_PROTO,
            3,
            false,
            0,
            &[0, vptr, 0, optr, 0, int],
        ); // 8
        let pptr = b.ty("", KIND_PTR, 0, false, proto, &[]); // 9
        b.ty("btf_trace_tp", KIND_TYPEDEF, 0, false, pptr, &[]);
        b.finish()
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let data = sample();
        let btf = KernelBtf::parse(&data).unwrap();
        assert_eq!(
            btf.member("outer", "name").unwrap(),
            Member { offset: 0, size: 8 }
        );
        assert_eq!(
            btf.member("outer", "b").unwrap(),
            Member {
                offset: 64,
                size: 4
            }
        );
        assert_eq!(
            btf.member("outer", "x").unwrap(),
            Member {
                offset: 68,
                size: 4
            }
        );
        assert!(matches!(
            btf.member("outer", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member("inner", "x"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.member("outer", "bits"),
            Err(BtfError::UnexpectedMember { .. })
        ));
    }

    #[test]
    fn reads_tracepoint_args() {
        let data = sample();
        let btf = KernelBtf::parse(&data).unwrap();
        assert_eq!(
            btf.tracepoint_args("tp").unwrap(),
            ["struct outer *", "int"]
        );
        assert!(matches!(
            btf.tracepoint_args("other"),
            Err(BtfError::NoTracepoint(_))
        ));
    }

    #[test]
    fn rejects_malformed_blobs() {
        assert!(KernelBtf::parse(&[]).is_err());
        assert!(KernelBtf::parse(&[0u8; 24]).is_err());
        let mut data = sample();
        let len = data.len();
        data.truncate(len - 5); // strings cut short
        assert!(KernelBtf::parse(&data).is_err());
        let mut data = sample();
        data[24 + 7] = 30; // first type gets kind 30 (unknown)
        assert!(KernelBtf::parse(&data).is_err());
    }

    /// The running kernel (needs /sys/kernel/btf/vmlinux; no privileges).
    #[test]
    fn running_kernel_layout() {
        let Ok(data) = read_vmlinux() else {
            eprintln!("SKIP running_kernel_layout: {VMLINUX_BTF} not readable");
            return;
        };
        let btf = KernelBtf::parse(&data).unwrap();
        let offsets = kernel_offsets(&btf).unwrap();
        eprintln!("{offsets:#?}");
        assert_eq!(offsets.valid, 1);
        for tp in ["sched_process_exec", "sched_process_exit"] {
            eprintln!("{tp}({})", btf.tracepoint_args(tp).unwrap().join(", "));
        }
        let exec = btf.tracepoint_args("sched_process_exec").unwrap();
        assert_eq!(exec[0], "struct task_struct *");
        // Sanity: pid and tgid are adjacent pid_t members.
        let pid = btf.member("task_struct", "pid").unwrap();
        assert_eq!(pid.offset + 4, offsets.task_tgid);
        // KERNEL-NOTES: on 6.18 file.f_path sits in an anonymous union at 64.
        let f_path = btf.member("file", "f_path").unwrap();
        eprintln!("file.f_path = {f_path:?}");
    }
}
