// The article's `message.step.ts`, in TypeScript beside Python steps: POST /polyglot/messages
// stores the message and emits `polyglot.message.sent`; a Python step analyses it
// (analyze_message_step.py) and a JavaScript step records the analysis (record_analysis.step.js).
import { MESSAGES, type Message } from './messages.ts';

interface SendMessageRequest {
  body: { text: string; room: string };
  user: { id: string } | null;
}

export const config = {
  name: 'PolyglotSendMessage',
  type: 'api',
  path: '/polyglot/messages',
  method: 'POST',
  description: 'Send a message; a Python step analyses it, a JavaScript step records the result',
  body: {
    type: 'object',
    properties: {
      text: { type: 'string', minLength: 1, maxLength: 2000 },
      room: { type: 'string', minLength: 1, maxLength: 100, default: 'general' },
    },
    required: ['text'],
    additionalProperties: false,
  },
  responses: {
    202: {
      type: 'object',
      properties: { id: { type: 'string' }, status: { type: 'string' } },
      required: ['id', 'status'],
    },
  },
  emits: ['polyglot.message.sent'],
  flows: ['polyglot'],
};

export const handler = async (req: SendMessageRequest, { emit, state, logger }: any) => {
  const id = crypto.randomUUID();
  const message: Message = {
    id,
    text: req.body.text,
    room: req.body.room,
    sender: req.user?.id ?? null,
    status: 'sent',
    sentAt: new Date().toISOString(),
  };
  logger.info('Sending message', { id, room: message.room });
  await state.set(MESSAGES, id, message);
  await emit({ topic: 'polyglot.message.sent', data: { id, text: message.text, room: message.room } });
  return { status: 202, body: { id, status: message.status } };
};
