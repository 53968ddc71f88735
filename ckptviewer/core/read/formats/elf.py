"""Finding a symbol's bytes in an ELF file (shared object or object file), by reading it as data.

AOTInductor packages keep their weights inside the compiled model: between the symbols
``_binary_constants_bin_start`` and ``_binary_constants_bin_end`` of ``.wrapper.so`` (or of a ``.o`` in a
C++-only package). Nothing here loads, maps for execution or runs the file: it parses the section
header table and the symbol tables (64-bit little-endian ELF only) with every offset and count
checked against the bytes present, and turns a symbol's address into a file offset through the section
that holds it.
"""
from __future__ import annotations

import struct

from ...util.errors import CorruptFileError, UnsupportedFormatError

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")     # ELF64 file header (64 bytes)
_SHDR = struct.Struct("<IIQQQQIIQQ")            # ELF64 section header (64 bytes)
_SYM = struct.Struct("<IBBHQQ")                  # ELF64 symbol (24 bytes)
SHT_SYMTAB, SHT_DYNSYM, SHT_NOBITS = 2, 11, 8
ET_REL = 1
MAX_SECTIONS = 1 << 16
MAX_SYMBOLS = 1 << 22


def find_symbols(buf, names: set[str]) -> dict[str, int]:
    """File offsets of the symbols ``names`` in the ELF file held in ``buf`` (those found)."""
    if len(buf) < _EHDR.size or bytes(buf[:4]) != b"\x7fELF":
        raise CorruptFileError("not an ELF file")
    (ident, e_type, _machine, _version, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum,
     shentsize, shnum, _shstrndx) = _EHDR.unpack_from(buf, 0)
    if ident[4] != 2 or ident[5] != 1:
        raise UnsupportedFormatError("only 64-bit little-endian ELF files are read")
    if shentsize != _SHDR.size or shnum > MAX_SECTIONS or shoff + shnum * _SHDR.size > len(buf):
        raise CorruptFileError("the ELF section table lies outside the file")
    sections = [_SHDR.unpack_from(buf, shoff + i * _SHDR.size) for i in range(shnum)]
    found: dict[str, int] = {}
    wanted = {n.encode("ascii") for n in names}
    for (_name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize) in sections:
        if sh_type not in (SHT_SYMTAB, SHT_DYNSYM) or entsize != _SYM.size or link >= shnum:
            continue
        if offset + size > len(buf) or size // _SYM.size > MAX_SYMBOLS:
            raise CorruptFileError("an ELF symbol table lies outside the file")
        str_off, str_size = sections[link][4], sections[link][5]
        if str_off + str_size > len(buf):
            raise CorruptFileError("an ELF string table lies outside the file")
        strings = bytes(buf[str_off:str_off + str_size])
        for i in range(size // _SYM.size):
            st_name, _info_b, _other, shndx, value, _size = _SYM.unpack_from(buf, offset + i * _SYM.size)
            if st_name >= str_size:
                continue
            end = strings.find(b"\0", st_name)
            name = strings[st_name:end if end >= 0 else str_size]
            if name not in wanted or name.decode() in found:
                continue
            pos = _file_offset(sections, e_type, shndx, value)
            if pos is not None and 0 <= pos <= len(buf):
                found[name.decode()] = pos
    return found


def _file_offset(sections: list[tuple], e_type: int, shndx: int, value: int) -> int | None:
    """Where a symbol's address lies in the file: relative to its section in an object file, through the
    section that covers the address in a linked one."""
    if e_type == ET_REL:
        if not 0 < shndx < len(sections) or sections[shndx][1] == SHT_NOBITS:
            return None
        return sections[shndx][4] + value
    for (_name, sh_type, _flags, addr, offset, size, *_rest) in sections:
        if sh_type != SHT_NOBITS and addr and addr <= value <= addr + size:
            return offset + (value - addr)
    return None
