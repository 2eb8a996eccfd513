"""Quick start: the environment's base URL and ready-to-paste snippets with the chosen model."""

from __future__ import annotations

from typing import Any

import reflex as rx

from web.api import ApiError
from web.state.session import SessionState

KEY_PLACEHOLDER = "$CROSSLOGIC_API_KEY"


class QuickstartState(SessionState):
    loading: bool = True
    error: str = ""
    model: str = ""

    @rx.var
    def env(self) -> dict[str, str]:
        for e in self.envs:
            if e["name"] == self.current_env:
                return e
        return {"name": "", "region": "", "base_url": "", "models": "", "first_model": ""}

    @rx.var
    def env_models(self) -> list[str]:
        return [m.strip() for m in self.env["models"].split(",") if m.strip()]

    @rx.var
    def chosen_model(self) -> str:
        models = self.env_models
        return self.model if self.model in models else (models[0] if models else "")

    @rx.var
    def curl_snippet(self) -> str:
        return (
            f"curl {self.env['base_url']}/chat/completions \\\n"
            f'  -H "Authorization: Bearer {KEY_PLACEHOLDER}" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f'  -d \'{{"model": "{self.chosen_model}", '
            '"messages": [{"role": "user", "content": "Hello!"}]}\''
        )

    @rx.var
    def python_snippet(self) -> str:
        return (
            "import os\n"
            "from openai import OpenAI\n\n"
            "client = OpenAI(\n"
            f'    base_url="{self.env["base_url"]}",\n'
            '    api_key=os.environ["CROSSLOGIC_API_KEY"],\n'
            ")\n\n"
            "reply = client.chat.completions.create(\n"
            f'    model="{self.chosen_model}",\n'
            '    messages=[{"role": "user", "content": "Hello!"}],\n'
            ")\n"
            "print(reply.choices[0].message.content)\n"
        )

    @rx.var
    def js_snippet(self) -> str:
        return (
            'import OpenAI from "openai";\n\n'
            "const client = new OpenAI({\n"
            f'  baseURL: "{self.env["base_url"]}",\n'
            "  apiKey: process.env.CROSSLOGIC_API_KEY,\n"
            "});\n\n"
            "const reply = await client.chat.completions.create({\n"
            f'  model: "{self.chosen_model}",\n'
            '  messages: [{ role: "user", content: "Hello!" }],\n'
            "});\n"
            "console.log(reply.choices[0].message.content);\n"
        )

    @rx.event
    def set_model(self, model: str) -> None:
        self.model = model

    @rx.event
    async def load(self) -> Any:
        self.loading = True
        self.error = ""
        yield
        try:
            if (redirect := await self.enter_org()) is not None:
                yield redirect
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
        finally:
            self.loading = False
