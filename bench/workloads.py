"""The benchmark's workloads: what each client sends, and how a streamed chunk's text is read.

- `short`: streaming /v1/completions, a short story opening (distinct per request), 128 tokens out. SmolLM2
  continues these past 128 tokens, so every request runs to max_tokens.
- `shared`: streaming /v1/chat/completions the way chat and RAG apps call a model: one long system prompt
  (about 770 tokens on SmolLM2's tokenizer, the same for every request) and a distinct short question per
  request, 32 tokens out.

Every request is greedy (temperature 0), so the servers decode the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Story openings: SmolLM2 continues them for well over 128 tokens (an instruction-style completion prompt
# often ends at once with EOS, which would measure nothing).
STORY_OPENINGS = [
    "Once upon a time, in a small village by the sea, there lived",
    "Chapter 1. The old lighthouse keeper",
    "The robot looked at the blank canvas and",
    "It was the coldest winter anyone could remember, and",
    "The history of the city begins with",
    "Dear diary, today something strange happened:",
    "The expedition left the camp at dawn. The first day",
    "In the year 2150, the first colony on Mars",
]

# A support assistant's system prompt, as a RAG or helpdesk app would send it with every question.
SYSTEM_PROMPT = """\
You are Nova, the customer support assistant of Northwind Outdoor Gear, an online shop for outdoor \
equipment in Europe and North America. Answer in a friendly, concise and accurate way. Use only the \
policies below; if a question is not covered, say that you do not know and offer to open a ticket with \
a human agent. Never invent prices, discounts, order numbers or delivery dates.

Orders and payment. Customers can pay by credit card, debit card, PayPal or bank transfer. Orders paid by \
bank transfer are reserved for seven days and cancelled automatically if the payment does not arrive. An \
order can be changed or cancelled free of charge until it has been handed to the carrier; after that, the \
customer has to use the return process. Invoices can be downloaded from the order \
history.

Shipping. Standard shipping takes three to five working days within the European Union and five to eight \
working days to the United States and Canada. Express shipping takes one to two working days in the \
European Union only. Shipping is free for orders above 80 euros or 90 dollars. Parcels are sent with DHL in \
Europe and with UPS in North America; the tracking link is sent by e-mail as soon as the parcel leaves the \
warehouse. Bulky items such as large tents may be delivered by a freight company that calls the customer to \
agree on a delivery window.

Returns and refunds. Customers can return unused items within 30 days of delivery for a full refund. Items \
must be in their original packaging with all labels attached. Used items can only be returned if they are \
defective. The customer prints the prepaid return label from the order history; returns from outside the \
European Union are paid by the customer unless the item is defective. Refunds are issued to the original \
payment method within five working days after the warehouse has checked the item.

Warranty and repairs. All products have a two-year warranty against manufacturing defects. Tents, \
backpacks and sleeping bags from our own brand Northwind Trail have a lifetime warranty on seams and \
zippers. Damage caused by accidents, wear and tear, or improper use is not covered, but our repair service \
can fix most items for a fee. To start a warranty claim the customer sends photos of the defect and the \
order number through the support form.

Product advice. When customers ask which product to buy, ask about the season, the expected temperatures, \
the number of people, and whether weight matters more than comfort. Recommend three-season tents for spring \
to autumn and four-season tents for winter camping. Sleeping bags are rated with a comfort temperature and a \
limit temperature; recommend a bag whose comfort temperature is at least five degrees below the coldest \
night expected. Remind customers that gas stoves lose power below freezing and that liquid fuel stoves work \
better in the cold.

Accounts and privacy. Customers can change their address, password and newsletter settings in the account \
settings. A forgotten password is reset with the link on the login page. We never ask for passwords by \
e-mail or chat. Customers can request a copy of their personal data or the deletion of their account at any \
time; deletion is completed within 30 days, except for invoices that we must keep for ten years by law.

Loyalty programme. Members of the Northwind Club collect one point per euro or dollar spent and receive a \
voucher of ten euros for every 500 points. Points expire after two years. Vouchers cannot be exchanged \
for cash and only one voucher can be used per order.

Style. Keep answers short: two to four sentences unless the customer asks for details. End with a \
question only if you need more information to help."""

QUESTIONS = [
    "How long does shipping to Canada take?",
    "Can I return a tent that I already used once?",
    "Which sleeping bag should I buy for camping in March in the Alps?",
    "My order was paid by bank transfer. When is it cancelled?",
    "Is express shipping available to the United States?",
    "How do I reset my password?",
    "Do you have a lifetime warranty on backpacks?",
    "When do I get my refund after a return?",
    "Can I use two vouchers on one order?",
    "My stove does not work well in winter. Why?",
    "How many points do I need for a voucher?",
    "Can I change my delivery address after ordering?",
    "Who pays for returns from Switzerland?",
    "Do my loyalty points expire?",
    "Which tent do you recommend for winter camping?",
    "How do I start a warranty claim for a broken zipper?",
    "Can I download my invoice again?",
    "Is shipping free for an order of 85 euros?",
    "How can I delete my account?",
    "What carrier delivers my parcel in Germany?",
    "Can you repair a tent that a tree branch tore?",
    "I forgot to attach the labels. Can I still return the jacket?",
    "What payment methods do you accept?",
    "How do I know when my large tent will arrive?",
    "Do you keep my invoices after I delete my account?",
    "Is a gas stove a good idea for a trip to Norway in January?",
    "How long is the warranty on a headlamp?",
    "Can I cancel my order if it has already shipped?",
    "What are the benefits of the Northwind Club?",
    "Can I exchange a voucher for cash?",
    "Will you ever ask me for my password by e-mail?",
    "How fast is standard shipping within the European Union?",
]


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: the endpoint, the request body of client i's request j, the output length."""

    name: str
    path: str
    max_tokens: int
    description: str

    def body(self, client: int, request: int, model: str) -> dict[str, Any]:
        common = {"model": model, "max_tokens": self.max_tokens, "temperature": 0, "stream": True}
        if self.name == "short":
            prompt = f"Story {client}.{request}. {STORY_OPENINGS[(client + request) % len(STORY_OPENINGS)]}"
            return {**common, "prompt": prompt}
        # Distinct questions (8 clients x 4 requests: all 32), the same system prompt for everyone.
        question = QUESTIONS[(client + 8 * request + request // 4) % len(QUESTIONS)]
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
        return {**common, "messages": messages}

    def text(self, chunk: dict[str, Any]) -> str:
        """The generated text a streamed chunk carries ('' for role, usage and final chunks)."""
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        if self.path == "/v1/completions":
            return choices[0].get("text") or ""
        return (choices[0].get("delta") or {}).get("content") or ""


WORKLOADS = {
    "short": Workload(
        "short", "/v1/completions", 128, "short story prompt (~15 tokens), 128 tokens out, /v1/completions"
    ),
    "shared": Workload(
        "shared",
        "/v1/chat/completions",
        32,
        "~770-token shared system prompt + distinct short question, 32 tokens out, /v1/chat/completions",
    ),
}
