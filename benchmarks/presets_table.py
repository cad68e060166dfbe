"""Params and FLOPs of every preset, beside the paper's numbers.

  python benchmarks/presets_table.py            # prints the Markdown table
  python benchmarks/presets_table.py --write    # also updates
                                  # docs/presets.md and benchmarks/presets.json

The table is computed by `thinet_jax.profile.count` (analytic; MAC = 2 FLOPs,
convolutions and dense layers). The paper's column quotes Luo et al. (ICCV
2017, Tables 3-5) for comparison; a test keeps docs/presets.md equal to
this output.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from thinet_jax import presets, profile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN = "<!-- presets-table:begin -->"
END = "<!-- presets-table:end -->"

# (params in millions, GFLOPs) as printed in the paper, ImageNet 224x224.
PAPER = {
  "vgg16": (138.34, 30.94),
  "thinet-conv": (131.44, 9.58),
  "thinet-gap": (8.32, 9.34),
  "thinet-tiny": (1.32, 2.01),
  "resnet50": (25.56, 7.72),
  "thinet-70": (16.94, 4.88),
  "thinet-50": (12.38, 3.41),
  "thinet-30": (8.66, 2.20),
}


def rows() -> list[dict]:
  out = []
  for name in presets.names():
    size = presets.IMAGE_SIZE[name]
    p = profile.count(presets.get(name), size)
    out.append(
      dict(
        name=name,
        image_size=size,
        params=p["params"],
        flops=p["flops"],
        paper=PAPER.get(name),
      )
    )
  return out


def markdown(table: list[dict]) -> str:
  lines = [
    "| preset | input | params | FLOPs | paper (params, FLOPs) |",
    "|---|---|---:|---:|---|",
  ]
  for r in table:
    paper = f"{r['paper'][0]:.2f}M, {r['paper'][1]:.2f}G" if r["paper"] else ""
    lines.append(
      f"| `{r['name']}` | {r['image_size']}x{r['image_size']} "
      f"| {r['params']:,} | {profile.human(r['flops'])} | {paper} |"
    )
  return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
  """Replaces what lies between the table markers in `text`."""
  start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
  return text[:start] + "\n" + block + "\n" + text[end:]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--write", action="store_true",
    help="update docs/presets.md and presets.json",
  )  # fmt: skip
  args = parser.parse_args()
  table = rows()
  block = markdown(table)
  print(block)
  if args.write:
    (ROOT / "benchmarks" / "presets.json").write_text(
      json.dumps(table, indent=2) + "\n"
    )
    readme = ROOT / "docs" / "presets.md"
    readme.write_text(replace_block(readme.read_text(), block))


if __name__ == "__main__":
  main()
