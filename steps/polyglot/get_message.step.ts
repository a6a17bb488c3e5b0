// GET /polyglot/messages/{id}: the message and, once the Python step has run, its analysis.
import { MESSAGES, type Message } from './messages.ts';

export const config = {
  name: 'PolyglotGetMessage',
  type: 'api',
  path: '/polyglot/messages/{id}',
  method: 'GET',
  flows: ['polyglot'],
};

export const handler = async (req: { params: { id: string } }, { state }: any) => {
  const message: Message | null = await state.get(MESSAGES, req.params.id);
  if (message === null) {
    // status + code: answered with the error envelope (404 not_found), translated
    throw Object.assign(new Error(`no message ${req.params.id}`), { status: 404, code: 'not_found' });
  }
  return { status: 200, body: message };
};
