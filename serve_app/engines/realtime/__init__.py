"""The OpenAI Realtime wire protocol (protocol.py) and the functions a realtime model may
call (tools.py); actors/realtime.py drives a session from them."""
