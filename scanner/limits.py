"""Every resource bound of a scan in one place. Exceeding any of them is a finding (LIMIT-*), never a crash."""

from __future__ import annotations

from scanner.record import fields, record, replace

MiB = 1024 * 1024
GiB = 1024 * MiB


@record(frozen=True)
class Limits:
    # whole files and members
    max_file_bytes: int = 64 * GiB          # larger top-level files are reported, not read
    max_read_bytes: int = 1 * GiB           # bytes one analyzer may pull into memory at once (pickles, configs)
    # pickle engine
    max_pickle_opcodes: int = 30_000_000    # opcode budget; imports, calls, text and frame opcodes count 24 (≈ 5 s)
    max_pickle_stack: int = 1_000_000
    max_pickle_memo: int = 6_000_000        # a 50 MB pickle of small objects memoizes 2-4 M (≈ 80 B each)
    max_pickle_streams: int = 64            # concatenated pickles in one stream
    max_nested_payload_depth: int = 4       # pickle-in-pickle, base64-in-pickle ...
    max_evidence_chars: int = 400
    # containers and archives
    max_depth: int = 8                      # nesting of containers
    max_members: int = 20_000               # members per top-level file (each costs ~0.1-0.2 ms to list and check)
    max_hidden_members: int = 1_000         # zip local headers no directory lists (each already a finding)
    max_member_bytes: int = 4 * GiB         # decompressed size of one member that is read
    max_total_bytes: int = 4 * GiB          # decompressed bytes in one top-level file, nested archives included
    max_ratio: int = 200                    # decompression ratio beyond which a member is a bomb
    min_bomb_bytes: int = 16 * MiB          # output below this size is never called a bomb by ratio alone
    max_bytes_after_bomb: int = 64 * MiB    # once a bomb is reported, decompressed bytes left for the rest
    max_file_seconds: int = 30              # wall clock for one top-level file (checked between steps)
    # headers and configs
    max_header_bytes: int = 100 * MiB       # safetensors header, GGUF metadata, ONNX/Keras configs
    max_json_depth: int = 200
    max_string_bytes: int = 64 * MiB
    max_array_items: int = 10_000_000
    # chat templates (checked before Jinja2 parses them)
    max_template_tags: int = 20_000          # {{ }} and {% %} tags
    max_template_filters: int = 2_000        # `|` outside string literals, summed over the template
    max_template_nesting: int = 64           # block nesting and bracket depth within a tag
    # HDF5 object graph and ONNX graphs
    max_hdf5_objects: int = 200_000         # groups, datasets, links and attributes visited in one file
    max_hdf5_depth: int = 64                # group nesting
    max_hdf5_seconds: int = 8               # wall time of the sandboxed HDF5 library walk of one file
    max_hdf5_memory: int = 512 * MiB        # address space the sandboxed HDF5 walk may add (scan + child < 1 GiB)
    max_graph_depth: int = 32               # ONNX subgraphs inside subgraphs (If / Loop / Scan)
    max_graph_nodes: int = 5_000_000        # ONNX nodes over the graph, its subgraphs and functions
    max_onnx_inline_bytes: int = 64 * MiB   # larger ONNX files are parsed as a skeleton (tensor payloads skipped)
    max_proto_fields: int = 2_000_000       # protobuf fields in an ONNX model (parsing makes an object of each)

    def with_overrides(self, values: dict[str, object]) -> Limits:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for k, v in values.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"limit {k} must be a positive integer, got {v!r}")
        return replace(self, **values)  # type: ignore[arg-type]
