import { jsonMemberSpan } from '../../bus/json-span';
import { rng } from '../helpers/rng';

const span = (text: string, name = 'value'): string | undefined => {
  const data = Buffer.from(text);
  const s = jsonMemberSpan(data, name);
  return s === undefined ? undefined : data.subarray(s[0], s[1]).toString();
};

describe('json member span', () => {
  test('json span - finds the exact text of a member value, of every kind, without the whitespace around it', () => {
    expect(span('{"key":"k","value":12345678901234567890}')).toBe('12345678901234567890');
    expect(span('{"key":"k","value":1.0}')).toBe('1.0');
    expect(span('{ "value" :\t{ "a" : [1, "x}]", {"b":null}] }\n, "key":"k" }')).toBe('{ "a" : [1, "x}]", {"b":null}] }');
    expect(span('{"key":"k","value":"a \\"quoted\\" } string"}')).toBe('"a \\"quoted\\" } string"');
    expect(span('{"key":"k","value":[]}')).toBe('[]');
    expect(span('{"key":"k","value":true}')).toBe('true');
    expect(span('{"key":"k","value":null }')).toBe('null');
    expect(span('{"key":"ключ","value":"日本語 \\u00e9"}')).toBe('"日本語 \\u00e9"');
    expect(span('{"key":"k","value":-0.5e-3}')).toBe('-0.5e-3');
  });

  test('json span - a name written with escapes is the name, and the last of repeated names wins, as in JSON.parse', () => {
    expect(span('{"val\\u0075e":7,"key":"k"}')).toBe('7');
    expect(span('{"value":1,"key":"k","value":2}')).toBe('2');
    expect(span('{"values":1,"valu":2,"xvalue":3}')).toBeUndefined();
    expect(span('{"key":"value"}')).toBeUndefined();
    expect(span('{}')).toBeUndefined();
    expect(span('[{"value":1}]')).toBeUndefined();
    expect(span('"value"')).toBeUndefined();
    expect(span('{"a":{"value":1},"value":2}')).toBe('2');
    expect(span('{"a":{"value":1}}')).toBeUndefined();
  });

  test('json span - on random bodies the span parses to exactly what JSON.parse gives for the member', () => {
    const rand = rng(5);
    const ws = () => [' ', '', '\n', '\t', '  ', '\r\n'][rand(6)];
    const str = () => JSON.stringify(['', 'x', 'a"b', 'c\\d', '}]{[', ',:', 'é日', '\u2028'][rand(8)]);
    const value = (depth: number): string => {
      const k = rand(depth > 2 ? 4 : 6);
      if (k === 0) return String([0, -1, 3.25, 1e21, 12345678901234567890][rand(5)]);
      if (k === 1) return str();
      if (k === 2) return ['true', 'false', 'null'][rand(3)];
      if (k === 3) return `${rand(2) ? '-' : ''}${rand(1000)}.${rand(100)}e${rand(5)}`;
      if (k === 4) return `[${ws()}${Array.from({ length: rand(4) }, () => ws() + value(depth + 1) + ws()).join(',')}]`;
      return `{${ws()}${Array.from({ length: rand(4) }, () => `${ws()}${str()}${ws()}:${ws()}${value(depth + 1)}${ws()}`).join(',')}}`;
    };
    const wrong: string[] = [];
    for (let n = 0; n < 2000; n++) {
      const members = Array.from({ length: 1 + rand(4) }, () => [rand(3) === 0 ? '"value"' : str(), value(0)]);
      const text = `${ws()}{${members.map(([k, v]) => `${ws()}${k}${ws()}:${ws()}${v}${ws()}`).join(',')}}${ws()}`;
      const parsed = JSON.parse(text) as Record<string, unknown>;
      const got = span(text);
      const has = Object.prototype.hasOwnProperty.call(parsed, 'value');
      if (!has) {
        if (got !== undefined) wrong.push(`${text} -> ${got}, expected none`);
        continue;
      }
      if (got === undefined || got !== got.trim() || JSON.stringify(JSON.parse(got)) !== JSON.stringify(parsed.value)) {
        wrong.push(`${text} -> ${got}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
