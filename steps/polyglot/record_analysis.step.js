// Back in JavaScript: stores what the Python step found, and counts messages per tone.
export const config = {
  name: 'PolyglotRecordAnalysis',
  type: 'event',
  subscribes: ['polyglot.message.analyzed'],
  input: {
    type: 'object',
    properties: {
      id: { type: 'string' },
      words: { type: 'integer', minimum: 0 },
      tone: { enum: ['question', 'exclamation', 'statement'] },
      language: { type: 'string' },
    },
    required: ['id', 'words', 'tone', 'language'],
  },
  flows: ['polyglot'],
};

export const handler = async (event, { state, logger }) => {
  const { id, words, tone, language } = event.data;
  await state.merge('polyglot_messages', id, { status: 'analyzed', analysis: { words, tone, language } });
  const count = await state.increment('polyglot_stats', tone);
  logger.info('Analysis recorded', { id, tone, count });
};
