"""Chat UI in front of the model server (issue 15): a Gradio page over its OpenAI streaming API."""
