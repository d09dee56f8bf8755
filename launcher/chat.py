"""`launch-chat RUN_DIR`: talk to a run's trained model in the terminal, tokens streamed as they come.

Prompts are rendered by the chat template the run trained with (data.template, launcher/data/templates.py),
tokenized exactly as in training; generation stops at eos or the template's end-of-turn token.
`--prompt TEXT` answers once and exits (scripts, tests); without it, an interactive loop keeps the history
(`clear` starts over, `exit` or Ctrl-D leaves).

    launch-chat RUN_DIR [--prompt TEXT] [--system TEXT] [--max_new_tokens N] [--temperature T] [--top_p P]
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from launcher.data.templates import TemplateError, encode_prompt, stop_token_ids
from launcher.exitcodes import EXIT_USAGE
from launcher.inference import RunError, TrainedRun, open_run


class Chat:
    def __init__(self, trained: TrainedRun, device: str, system: Optional[str] = None):
        import torch

        from launcher.worker.model import load_for_inference, resolve_precision

        precision = resolve_precision("auto", device)
        # a qlora run is chatted with as it trained (4-bit) where bitsandbytes can run: on a GPU
        quantize = device == "cuda" and trained.cfg.adapter.quantization_bit is not None
        self.tokenizer, self.model = load_for_inference(trained, precision, quantize=quantize)
        if not quantize:
            self.model.to(torch.device(device))
        self.device = device
        self.template = trained.cfg.data.template
        self.stop = stop_token_ids(self.tokenizer, self.template)
        self.system = system
        self.history: list[dict[str, str]] = []

    def prompt_ids(self, text: str) -> list[int]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return encode_prompt(self.tokenizer, self.template, [*system, *self.history,
                                                              {"role": "user", "content": text}])

    def reply(self, text: str, gen: dict[str, Any], show_prompt: bool = False) -> str:
        """Streams the answer to stdout and returns it; the turn joins the history."""
        import torch
        from transformers import TextStreamer

        ids = self.prompt_ids(text)
        if show_prompt:
            print(self.tokenizer.decode(ids), file=sys.stderr, flush=True)
        input_ids = torch.tensor([ids], device=self.device)
        sample = gen["temperature"] > 0
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=gen["max_new_tokens"],
                do_sample=sample, temperature=gen["temperature"] if sample else None,
                top_p=gen["top_p"] if sample else None, eos_token_id=self.stop,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=TextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True))
        answer = self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return answer


def interact(chat: Chat, gen: dict[str, Any], show_prompt: bool = False) -> None:
    print("launch-chat: `clear` starts a new conversation, `exit` (or Ctrl-D) leaves.", file=sys.stderr)
    while True:
        try:
            text = input("\nUser: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text == "exit":
            return
        if text == "clear":
            chat.history.clear()
            print("(history cleared)")
            continue
        if text:
            print("Assistant: ", end="", flush=True)
            chat.reply(text, gen, show_prompt)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="launch-chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run dir (written by `launch`)")
    parser.add_argument("--prompt", help="answer this one message and exit (non-interactive)")
    parser.add_argument("--system", help="a system message (default: the template's own, if any)")
    parser.add_argument("--checkpoint", help="chat with checkpoint N (or a checkpoint dir) instead of final/")
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.95, help="0 = greedy decoding")
    parser.add_argument("--top_p", type=float, default=0.7)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--show_prompt", action="store_true", help="print each rendered prompt to stderr")
    args = parser.parse_args(argv)
    try:
        trained = open_run(args.run_dir, args.checkpoint)
        if trained.cfg.stage.name.value == "rm":
            raise RunError(f"{args.run_dir} is a reward model (stage=rm): it scores answers, it does not write "
                           "them; use it as stage.reward_model of a ppo/grpo/rloo run, or launch-export it")
        if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
            raise RunError("--max_new_tokens must be >= 1, --temperature >= 0, --top_p in (0, 1]")
        import torch

        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise RunError("--device cuda: no CUDA GPU visible; use --device cpu")
        chat = Chat(trained, device, args.system)
        gen = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
        if args.prompt is not None:
            chat.reply(args.prompt, gen, show_prompt=args.show_prompt)
        else:
            interact(chat, gen, args.show_prompt)
    except (RunError, TemplateError) as e:
        print(f"launch-chat: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
